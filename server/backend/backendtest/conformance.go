package backendtest

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/voicegateway/voicegateway/internal/testkit"
	"github.com/voicegateway/voicegateway/server/backend"
	"github.com/voicegateway/voicegateway/server/memory"
	"github.com/voicegateway/voicegateway/server/metrics"
	"github.com/voicegateway/voicegateway/server/protocol"
)

// Target is a backend under test and what the conformance suite needs to
// know about it. Everything but Backend is optional; a claim left unset is
// not checked.
type Target struct {
	// Backend is ready for Open.
	Backend backend.Backend
	// Connections counts the network connections the backend holds, as
	// their far end sees them (the openai backend's upstream sockets). Nil
	// for a backend that opens none.
	Connections func() int

	// AnswersCommit: the backend answers each committed turn by itself
	// (echo). Otherwise the client asks with response.create, as with the
	// OpenAI API when turn detection is off.
	AnswersCommit bool
	// EchoesAudio: a response's audio is the last committed audio (echo,
	// and the openaitest stand-in behind openai), so the suite checks that
	// it arrives unchanged.
	EchoesAudio bool
	// MaxBufferedAudio is how much uncommitted audio the backend holds
	// when backend.Info sets no bound; more is refused with buffer_full.
	// Zero: the backend holds none itself (a relay).
	MaxBufferedAudio time.Duration

	// Deafen, when set, makes whatever takes session s's input stop
	// taking it (openai: the upstream stops reading its socket) until hear
	// is called; the suite then checks that input which cannot go on is
	// refused or ends the session, and never piles up or blocks Handle.
	Deafen func(t *testing.T, s *Session) (hear func())
	// Break, when set, makes the backend fail session s from its own side
	// (openai: the upstream drops the connection).
	Break func(t *testing.T, s *Session)
	// Unreachable, when set, makes every later Open fail (openai: the
	// upstream is gone).
	Unreachable func(t *testing.T)
}

// Factory builds a fresh Target for one check; whatever it starts is
// stopped by t.Cleanup.
type Factory func(t *testing.T) Target

// Run is the conformance suite: what docs/protocol.md and the
// backend.Backend, backend.Conn and backend.Sink contracts promise of every
// backend, each as a subtest with a Target of its own. A check looks only
// at what a client or the process would see: the events and audio sent to
// the Sink, Handle's errors, the backend's connections and the goroutines
// left behind. Every session is driven by the Session harness, so the
// Sink's and Handle's contract checks apply throughout. A new backend
// passes it with a test that calls Run with its Factory.
func Run(t *testing.T, newTarget Factory) {
	if name := newTarget(t).Backend.Name(); name == "" {
		t.Error("Name() is empty: it is what --backend selects")
	}
	for _, check := range checks {
		t.Run(check.name, func(t *testing.T) {
			tg := newTarget(t)
			c := &conformance{t: t, tg: tg, baseline: goleak.IgnoreCurrent()}
			check.run(c)
		})
	}
}

var checks = []struct {
	name string
	run  func(c *conformance)
}{
	{"GreetsWithSessionCreated", (*conformance).greets},
	{"AnswersACommittedTurn", (*conformance).answersTurn},
	{"ResponseCreateAnswersAgain", (*conformance).responseCreate},
	{"SessionUpdate", (*conformance).sessionUpdate},
	{"ClearEmptiesTheBuffer", (*conformance).clear},
	{"InvalidInputIsReported", (*conformance).invalidInput},
	{"CancelWithoutResponseIsHarmless", (*conformance).cancelIdle},
	{"InputIsBounded", (*conformance).inputBounded},
	{"BufferingIsAccounted", (*conformance).bufferingAccounted},
	{"CloseStopsEverything", (*conformance).closeStops},
	{"ConcurrentCloseDuringOutput", (*conformance).concurrentClose},
	{"DrainClosesSessionsOneByOne", (*conformance).drain},
	{"OpenWithEndedContext", (*conformance).openEndedContext},
	{"OpenWithClosedSink", (*conformance).openClosedSink},
	{"BackendFailureEndsTheSession", (*conformance).backendFailure},
	{"UnreachableOpenFails", (*conformance).unreachable},
}

// conformance is one check's state.
type conformance struct {
	t        *testing.T
	tg       Target
	baseline goleak.Option
}

const (
	commitMsg = `{"type":"input_audio_buffer.commit"}`
	clearMsg  = `{"type":"input_audio_buffer.clear"}`
	createMsg = `{"type":"response.create"}`
)

// testAudio returns d of recognisable PCM16 at rate.
func testAudio(d time.Duration, rate int, seed byte) []byte {
	b := make([]byte, 2*int(int64(rate)*int64(d)/int64(time.Second)))
	for i := range b {
		b[i] = byte(i*7) + seed
	}
	return b
}

func appendMsg(pcm []byte) string {
	return `{"type":"input_audio_buffer.append","audio":"` + base64.StdEncoding.EncodeToString(pcm) + `"}`
}

// open opens a session and waits for its greeting.
func (c *conformance) open(info backend.Info) *Session {
	c.t.Helper()
	s := Open(c.t, c.tg.Backend, info)
	s.Sink.WaitType(c.t, protocol.TypeSessionCreated, 1)
	return s
}

// sendAudio appends audio in 100 ms pieces: as binary messages when
// binary is set, alternating with text ones, else as text only.
func sendAudio(t *testing.T, s *Session, audio []byte, binary bool) {
	t.Helper()
	piece := s.Info.SampleRate * 2 / 10
	for i, off := 0, 0; off < len(audio); i, off = i+1, off+piece {
		chunk := audio[off:min(off+piece, len(audio))]
		var err *protocol.Error
		if binary && i%2 == 0 {
			err = s.SendBinary(chunk)
		} else {
			err = s.Send(appendMsg(chunk))
		}
		if err != nil {
			t.Fatalf("append refused: %v", err)
		}
	}
}

// commit commits the buffer and, unless the backend answers commits by
// itself, asks for a response.
func (c *conformance) commit(s *Session) {
	c.t.Helper()
	committed := s.Sink.Count(protocol.TypeInputAudioCommitted)
	s.MustSend(commitMsg)
	ev := s.Sink.WaitType(c.t, protocol.TypeInputAudioCommitted, committed+1)
	if id, _ := ev.Object["item_id"].(string); id == "" {
		c.t.Errorf("input_audio_buffer.committed names no item: %s", ev.JSON)
	}
	if !c.tg.AnswersCommit {
		s.MustSend(createMsg)
	}
}

// turn sends audio, commits it and waits for the response; it returns the
// response's id.
func (c *conformance) turn(s *Session, audio []byte, binary bool) string {
	c.t.Helper()
	done := s.Sink.Count(protocol.TypeResponseDone)
	sendAudio(c.t, s, audio, binary)
	c.commit(s)
	return responseID(s.Sink.WaitType(c.t, protocol.TypeResponseDone, done+1))
}

func responseID(r Record) string {
	resp, _ := r.Object["response"].(map[string]any)
	id, _ := resp["id"].(string)
	return id
}

// checkResponse checks one finished response as a client sees it:
// response.created, then its audio, then response.done with status
// completed; audio as binary messages only for a binary client, in whole
// samples; and, for a backend that echoes, the audio of want.
func (c *conformance) checkResponse(s *Session, respID string, want []byte) {
	c.t.Helper()
	t := c.t
	if respID == "" {
		t.Fatal("response.done names no response")
	}
	created, done, firstAudio, lastAudio := -1, -1, -1, -1
	for i, r := range s.Sink.Records() {
		id := r.Ref.ResponseID
		if r.Kind != KindAudio {
			id, _ = r.Object["response_id"].(string)
		}
		switch {
		case r.Type == protocol.TypeResponseCreated && responseID(r) == respID:
			created = i
		case r.Type == protocol.TypeResponseDone && responseID(r) == respID:
			done = i
			resp, _ := r.Object["response"].(map[string]any)
			if resp["status"] != protocol.ResponseStatusCompleted {
				t.Errorf("response.done = %s, want status completed", r.JSON)
			}
		case (r.Kind == KindAudio || IsAudioDelta(r)) && id == respID:
			if firstAudio < 0 {
				firstAudio = i
			}
			lastAudio = i
			if IsAudioDelta(r) {
				if s.Info.BinaryAudio {
					t.Errorf("a binary client was sent audio as JSON: %.100s", r.JSON)
				}
				delta, _ := r.Object["delta"].(string)
				if b, err := base64.StdEncoding.DecodeString(delta); err != nil || len(b)%2 != 0 {
					t.Errorf("audio delta is not base64 PCM16: %.100s", r.JSON)
				}
			}
		}
	}
	switch {
	case created < 0:
		t.Errorf("no response.created for %s; events: %v", respID, s.Sink.Types())
	case firstAudio < 0:
		t.Errorf("response %s has no audio", respID)
	case !(created < firstAudio && lastAudio < done):
		t.Errorf("response %s out of order: created at %d, audio at %d–%d, done at %d", respID, created, firstAudio, lastAudio, done)
	}
	if c.tg.EchoesAudio {
		if got := s.Sink.OutputAudio(respID); !bytes.Equal(got, want) {
			t.Errorf("response %s carried %d bytes of audio, want the %d committed, unchanged", respID, len(got), len(want))
		}
	}
}

// roundTrip clears the input buffer and waits for input_audio_buffer.cleared:
// it shows the session still answers, and that what was sent before it
// has been handled.
func (c *conformance) roundTrip(s *Session) {
	c.t.Helper()
	n := s.Sink.Count(protocol.TypeInputAudioCleared)
	s.MustSend(clearMsg)
	s.Sink.WaitType(c.t, protocol.TypeInputAudioCleared, n+1)
}

// expectReported sends a message the backend cannot accept and checks that
// the client hears of it and the session goes on: Handle refuses it with a
// non-fatal error, or the backend reports it in an error event that names
// the client's event_id.
func (c *conformance) expectReported(s *Session, msg, eventID string) {
	c.t.Helper()
	errorsBefore := s.Sink.Count(protocol.TypeError)
	if perr := s.Send(msg); perr != nil {
		if perr.Fatal {
			c.t.Errorf("%s ended the session (%+v): a client's mistake is reported and the session goes on", msg, *perr)
		}
		return
	}
	ev := s.Sink.WaitType(c.t, protocol.TypeError, errorsBefore+1)
	body, _ := ev.Object["error"].(map[string]any)
	if code, _ := body["code"].(string); code == "" || body["event_id"] != eventID {
		c.t.Errorf("%s was reported as %s, want an error with a code naming event_id %q", msg, ev.JSON, eventID)
	}
}

func (c *conformance) noFailures(sessions ...*Session) {
	c.t.Helper()
	for _, s := range sessions {
		if fails := s.Sink.Failures(); len(fails) > 0 {
			c.t.Errorf("session %s failed: %v", s.Info.SessionID, fails)
		}
	}
}

// waitConnections waits until the backend holds at most want connections.
func (c *conformance) waitConnections(want int, what string) {
	c.t.Helper()
	if c.tg.Connections == nil {
		return
	}
	testkit.Eventually(c.t, WaitTimeout, func() error {
		if n := c.tg.Connections(); n > want {
			return fmt.Errorf("%s: the backend holds %d connections, want at most %d", what, n, want)
		}
		return nil
	})
}

// released checks that nothing the check's sessions started is left:
// no connection and no goroutine beyond those the Target had before.
func (c *conformance) released(what string) {
	c.t.Helper()
	c.waitConnections(0, what)
	if err := goleak.Find(c.baseline); err != nil {
		c.t.Errorf("%s: goroutines left behind: %v", what, err)
	}
}

// bounded runs f, failing the test if it has not returned within
// WaitTimeout: a session's reader and its last step must never hang.
func (c *conformance) bounded(what string, f func()) {
	c.t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(WaitTimeout):
		c.t.Fatalf("%s did not return within %s", what, WaitTimeout)
	}
}

// greets: a client's first event is session.created, once, with the
// gateway object saying what was negotiated (docs/protocol.md, Audio).
func (c *conformance) greets() {
	for _, binary := range []bool{false, true} {
		info := DefaultInfo()
		info.BinaryAudio = binary
		transport := protocol.AudioTransportBase64
		if binary {
			transport = protocol.AudioTransportBinary
		}
		s := c.open(info)
		c.roundTrip(s)
		if types := s.Sink.Types(); types[0] != protocol.TypeSessionCreated || s.Sink.Count(protocol.TypeSessionCreated) != 1 {
			c.t.Errorf("%s client: events %v, want session.created first and once", transport, types)
		}
		created := s.Sink.WaitType(c.t, protocol.TypeSessionCreated, 1)
		if _, ok := created.Object["session"].(map[string]any); !ok {
			c.t.Errorf("session.created has no session object: %s", created.JSON)
		}
		gateway, _ := created.Object["gateway"].(map[string]any)
		want := map[string]any{
			"session_id": info.SessionID, "audio_transport": transport,
			"sample_rate": float64(info.SampleRate), "max_message_bytes": float64(info.MaxMessageBytes),
		}
		if !reflect.DeepEqual(gateway, want) {
			c.t.Errorf("%s client: gateway = %v, want %v", transport, gateway, want)
		}
		s.Close()
	}
}

// answersTurn: committed audio is answered with a response whose audio
// reaches the client in the transport it negotiated.
func (c *conformance) answersTurn() {
	for _, binary := range []bool{false, true} {
		info := DefaultInfo()
		info.BinaryAudio = binary
		s := c.open(info)
		audio := testAudio(200*time.Millisecond, info.SampleRate, 1)
		c.checkResponse(s, c.turn(s, audio, binary), audio)
		// A second turn is answered the same way.
		second := testAudio(100*time.Millisecond, info.SampleRate, 2)
		c.checkResponse(s, c.turn(s, second, binary), second)
		c.noFailures(s)
		s.Close()
	}
}

// responseCreate: response.create after a turn is answered with another
// response (echo replays the last turn, as does the OpenAI stand-in).
func (c *conformance) responseCreate() {
	s := c.open(DefaultInfo())
	audio := testAudio(100*time.Millisecond, s.Info.SampleRate, 3)
	first := c.turn(s, audio, false)
	done := s.Sink.Count(protocol.TypeResponseDone)
	s.MustSend(`{"type":"response.create","response":{"instructions":"again"}}`)
	again := responseID(s.Sink.WaitType(c.t, protocol.TypeResponseDone, done+1))
	if again == first {
		c.t.Errorf("response.create answered with the earlier response %s", first)
	}
	c.checkResponse(s, again, audio)
	c.noFailures(s)
}

// sessionUpdate: an update is acknowledged with session.updated; one that
// would change the audio format the gateway carries, or is malformed, is
// refused with invalid_event and changes and answers nothing.
func (c *conformance) sessionUpdate() {
	t := c.t
	s := c.open(DefaultInfo())
	instructions := func(r Record) any {
		session, _ := r.Object["session"].(map[string]any)
		return session["instructions"]
	}
	s.MustSend(`{"type":"session.update","event_id":"c-1","session":{"instructions":"be brief"}}`)
	if got := instructions(s.Sink.WaitType(t, protocol.TypeSessionUpdated, 1)); got != "be brief" {
		t.Errorf("session.updated instructions = %v, want the update's", got)
	}
	refused := []struct{ msg, param string }{
		{`{"type":"session.update","event_id":"c-2","session":{"instructions":"x","audio":{"input":{"format":{"type":"audio/pcm","rate":16000}}}}}`, "session.audio"},
		{`{"type":"session.update","event_id":"c-3","session":{"audio":{"output":{"format":{"type":"audio/pcm","rate":8000}}}}}`, "session.audio"},
		{`{"type":"session.update","event_id":"c-4","session":{"audio":"pcm"}}`, "session"},
	}
	for _, r := range refused {
		perr := s.Send(r.msg)
		if perr == nil || perr.Fatal || perr.Code != protocol.CodeInvalidEvent || !strings.HasPrefix(perr.Param, r.param) || perr.Message == "" {
			t.Errorf("%s: Handle = %+v, want a non-fatal invalid_event for %s…", r.msg, perr, r.param)
		}
	}
	s.MustSend(`{"type":"session.update","event_id":"c-5","session":{}}`)
	if got := instructions(s.Sink.WaitType(t, protocol.TypeSessionUpdated, 2)); got != "be brief" {
		t.Errorf("instructions = %v after refused updates, want them unchanged", got)
	}
	if n, errs := s.Sink.Count(protocol.TypeSessionUpdated), s.Sink.Count(protocol.TypeError); n != 2 || errs != 0 {
		t.Errorf("refused updates were answered: %d session.updated, %d errors; events %v", n, errs, s.Sink.Types())
	}
	c.noFailures(s)
}

// clear: input_audio_buffer.clear drops the uncommitted audio.
func (c *conformance) clear() {
	s := c.open(DefaultInfo())
	sendAudio(c.t, s, testAudio(200*time.Millisecond, s.Info.SampleRate, 4), false)
	c.roundTrip(s)
	c.expectReported(s, `{"type":"input_audio_buffer.commit","event_id":"c-empty"}`, "c-empty")
	after := testAudio(100*time.Millisecond, s.Info.SampleRate, 5)
	c.checkResponse(s, c.turn(s, after, false), after)
	c.noFailures(s)
}

// invalidInput: what a backend cannot do is reported to the client, and
// the session goes on.
func (c *conformance) invalidInput() {
	s := c.open(DefaultInfo())
	c.expectReported(s, `{"type":"input_audio_buffer.commit","event_id":"c-empty"}`, "c-empty")
	c.expectReported(s, `{"type":"conversation.no_such_event","event_id":"c-unknown"}`, "c-unknown")
	c.roundTrip(s)
	audio := testAudio(100*time.Millisecond, s.Info.SampleRate, 6)
	c.checkResponse(s, c.turn(s, audio, false), audio)
	c.noFailures(s)
}

// cancelIdle: response.cancel with nothing playing does no harm, and does
// not cancel the next response.
func (c *conformance) cancelIdle() {
	s := c.open(DefaultInfo())
	if perr := s.Send(`{"type":"response.cancel","event_id":"c-cancel"}`); perr != nil && perr.Fatal {
		c.t.Errorf("response.cancel with nothing playing ended the session: %+v", *perr)
	}
	audio := testAudio(100*time.Millisecond, s.Info.SampleRate, 7)
	c.checkResponse(s, c.turn(s, audio, false), audio)
	c.noFailures(s)
}

// floodBytes bounds a flood of input to a backend whose far end has stopped
// reading: holding this much is holding without bound.
const floodBytes = 64 << 20

// floodMessageBytes is the size of each message of a flood.
const floodMessageBytes = 64 << 10

// flood appends up to total bytes of audio in large messages, in a bounded
// time, until the backend ends the session (or refuses a message, when
// stopAtRefusal is set).
func (c *conformance) flood(s *Session, total int, stopAtRefusal bool) (accepted, refused int, fatal *protocol.Error) {
	c.t.Helper()
	const msgBytes = floodMessageBytes
	// Loud audio: a backend with turn detection keeps no silence it will
	// not commit, but holds speech until it ends.
	msg := testAudio(time.Duration(msgBytes/2)*time.Second/time.Duration(s.Info.SampleRate), s.Info.SampleRate, 11)
	c.bounded("a flood of appends", func() {
		for sent := 0; sent < total; sent += msgBytes {
			perr := s.SendBinary(msg)
			switch {
			case perr == nil:
				accepted += msgBytes
				continue
			case perr.Fatal:
				fatal = perr
				return
			case perr.Code != protocol.CodeBufferFull:
				c.t.Errorf("append refused with %+v, want buffer_full", *perr)
				return
			}
			refused++
			if stopAtRefusal {
				return
			}
		}
	})
	c.t.Logf("flood of up to %d bytes: %d accepted, %d appends refused, ended by %v", total, accepted, refused, fatal)
	return accepted, refused, fatal
}

// inputBounded: Handle never blocks on a flood of audio, and a backend
// holds no more than it claims: more is refused without ending the
// session, or the session ends with a documented code (a relay whose
// upstream cannot keep up).
func (c *conformance) inputBounded() {
	t := c.t
	s := c.open(DefaultInfo())
	limit := int(int64(s.Info.SampleRate) * 2 * int64(c.tg.MaxBufferedAudio) / int64(time.Second))
	accepted, refused, fatal := c.flood(s, 2*max(limit, s.Info.SampleRate*2*60), false)
	if c.tg.MaxBufferedAudio > 0 {
		if fatal != nil || refused == 0 || accepted > limit || accepted+floodMessageBytes <= limit {
			t.Errorf("accepted %d bytes, refused %d appends (fatal: %v); want up to the %d bytes claimed accepted, and the rest refused",
				accepted, refused, fatal, limit)
		}
	}
	if fatal == nil {
		c.roundTrip(s)
		c.noFailures(s)
	}
	s.Close()
	c.released("after a flood")

	if c.tg.Deafen == nil {
		return
	}
	// The same to a backend whose far end has stopped reading: what cannot
	// go on must be refused or end the session, long before floodBytes.
	s = c.open(DefaultInfo())
	hear := c.tg.Deafen(t, s)
	accepted, refused, fatal = c.flood(s, floodBytes, true)
	if fatal == nil && refused == 0 {
		t.Errorf("took %d bytes for a far end that reads nothing, refusing none", accepted)
	}
	hear()
	s.Close()
	c.released("after a flood to a deaf far end")
}

// bufferingAccounted: what a backend buffers for a session is charged to
// the session's memory account before it is held, a refused charge is a
// non-fatal buffer_full (or, for a relay whose far end stopped reading, a
// documented end), and Close gives everything back. The session under test
// has only its promise: another session took the rest of the budget.
func (c *conformance) bufferingAccounted() {
	t := c.t
	budget := memory.NewBudget(4*memory.Promised, metrics.New())
	hog, _ := budget.Open()
	acct, ok := budget.Open()
	if !ok {
		t.Fatal("the test's budget does not admit two sessions")
	}
	for hog.Reserve(memory.Audio, 4<<10) {
	}
	defer hog.Close()
	defer acct.Close()
	info := DefaultInfo()
	info.Memory = acct
	info.MaxBufferedBytes = 4 * memory.GuaranteedBytes // the budget, not the bound, refuses
	s := c.open(info)
	var hear func()
	if c.tg.Deafen != nil {
		hear = c.tg.Deafen(t, s)
	}
	accepted, refused, fatal := c.flood(s, 2<<20, false)
	held := acct.Held(memory.Audio) + acct.Held(memory.Upstream)
	if held > memory.GuaranteedBytes {
		t.Errorf("the account holds %d bytes for buffers, more than the %d promised with the budget spent", held, memory.GuaranteedBytes)
	}
	if c.tg.MaxBufferedAudio > 0 {
		if refused == 0 || fatal != nil {
			t.Errorf("accepted %d bytes with only %d promised: refused %d appends (fatal: %v); want the rest refused, the session kept",
				accepted, memory.GuaranteedBytes, refused, fatal)
		}
		if got := acct.Held(memory.Audio); got < int64(accepted) {
			t.Errorf("%d bytes of audio accepted but %d charged to the session's account", accepted, got)
		}
	}
	if hear != nil {
		hear()
	}
	s.Close()
	for _, k := range []memory.Kind{memory.Audio, memory.Upstream} {
		if got := acct.Held(k); got != 0 {
			t.Errorf("after Close the account still holds %d bytes of %s", got, k)
		}
	}
	c.released("after a flood on a spent budget")
}

// closeStops: Close stops everything the connection started and waits for
// it — idle or while audio flows, after the session's context has ended
// (as a session closes) or on its own — and is not a failure.
func (c *conformance) closeStops() {
	for _, tt := range []struct {
		name      string
		midOutput bool
		closeOnly bool
	}{
		{name: "idle session"},
		{name: "during a response", midOutput: true},
		{name: "during a response, context still live", midOutput: true, closeOnly: true},
	} {
		s := c.open(DefaultInfo())
		if tt.midOutput {
			// A slow sink keeps the backend inside its calls, and Close
			// comes while it is in one: Close must wait for it. The delay
			// is set before the response starts: an upstream that sends
			// a whole response at once would otherwise be done with the
			// sink before the delay applied, and no call would be in
			// progress to wait for.
			s.Sink.SetDelay(20 * time.Millisecond)
			c.startLongResponse(s)
			s.Sink.WaitBusy(c.t)
		}
		c.bounded("Close ("+tt.name+")", func() {
			if tt.closeOnly {
				s.CloseOnly()
			} else {
				s.Close()
			}
		})
		c.noFailures(s)
		c.released(tt.name)
	}
}

// startLongResponse starts a response longer than WaitTimeout, so that a
// backend that does not stop it cannot pass for one that does, and waits
// for its first audio.
func (c *conformance) startLongResponse(s *Session) {
	c.t.Helper()
	sendAudio(c.t, s, testAudio(WaitTimeout+5*time.Second, s.Info.SampleRate, 8), true)
	c.commit(s)
	s.Sink.Wait(c.t, "the response's audio", func() bool { return len(s.Sink.OutputAudio("")) > 0 })
}

// concurrentClose: the session ends (a drain deadline, a slow client) from
// another goroutine while the backend sends audio and the reader hands it
// events; the backend stops cleanly and Close releases everything. Run
// with -race.
func (c *conformance) concurrentClose() {
	for range 3 {
		s := c.open(DefaultInfo())
		c.startLongResponse(s)
		var reader sync.WaitGroup
		reader.Add(1)
		go func() {
			defer reader.Done()
			frame := testAudio(20*time.Millisecond, s.Info.SampleRate, 9)
			// At most the rate a session lets through by default (200
			// messages a second): a relay may end a client that floods
			// an upstream busy answering, and that is not this check.
			pace := time.NewTicker(5 * time.Millisecond)
			defer pace.Stop()
			for i := 0; s.Context().Err() == nil; i++ {
				<-pace.C
				var perr *protocol.Error
				if i%10 == 9 {
					perr = s.Send(commitMsg)
				} else {
					perr = s.SendBinary(frame)
				}
				if perr != nil && perr.Fatal {
					return
				}
			}
		}()
		s.Sink.Wait(c.t, "more audio", func() bool { return len(s.Sink.OutputAudio("")) > 10*s.Info.SampleRate/50 })
		s.Sink.SetDelay(5 * time.Millisecond)
		s.Sink.WaitBusy(c.t)
		s.End()
		c.bounded("the reader", reader.Wait)
		c.bounded("Close", s.Close)
		c.noFailures(s)
		c.released("a session closed during output")
	}
}

// drain: at the drain deadline sessions are closed one after another; each
// close disconnects that session's backend, and the others go on until
// theirs.
func (c *conformance) drain() {
	sessions := make([]*Session, 3)
	for i := range sessions {
		info := DefaultInfo()
		info.SessionID = fmt.Sprintf("sess_drain_%d", i)
		sessions[i] = c.open(info)
	}
	held := 0
	if c.tg.Connections != nil {
		held = c.tg.Connections()
	}
	for i, s := range sessions {
		c.bounded("Close", s.Close)
		if c.tg.Connections != nil {
			c.waitConnections(held-1, "after closing "+s.Info.SessionID)
			held = c.tg.Connections()
		}
		for _, other := range sessions[i+1:] {
			c.roundTrip(other)
		}
	}
	c.noFailures(sessions...)
	c.released("after the drain")
}

// openEndedContext: Open for a session that has already ended returns at
// once and leaves nothing behind, whether it fails or not.
func (c *conformance) openEndedContext() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var s *Session
	c.bounded("Open with an ended context", func() { s, _ = TryOpen(c.t, ctx, c.tg.Backend, DefaultInfo(), NewSink()) })
	if s != nil {
		c.bounded("Close", s.Close)
	}
	c.released("after Open with an ended context")
}

// openClosedSink: a client gone before the greeting (the sink refuses
// session.created) leaves nothing behind, whether Open fails or not.
func (c *conformance) openClosedSink() {
	sink := NewSink()
	sink.Close()
	var s *Session
	c.bounded("Open with a closed sink", func() { s, _ = TryOpen(c.t, context.Background(), c.tg.Backend, DefaultInfo(), sink) })
	if s != nil {
		c.bounded("Close", s.Close)
	}
	c.released("after Open with a closed sink")
}

// backendFailure: a backend that fails mid-session fails it once, with a
// fatal error a client can act on (the Sink checks the code), and Close
// still releases everything.
func (c *conformance) backendFailure() {
	if c.tg.Break == nil {
		c.t.Skip("the backend cannot fail on its own")
	}
	s := c.open(DefaultInfo())
	c.tg.Break(c.t, s)
	s.Sink.WaitFail(c.t)
	c.bounded("Close after a failure", s.Close)
	c.released("after a failure")
}

// unreachable: Open fails, as the error a session reports (the harness
// checks it), and leaves nothing behind.
func (c *conformance) unreachable() {
	if c.tg.Unreachable == nil {
		c.t.Skip("the backend is never unreachable")
	}
	c.tg.Unreachable(c.t)
	var s *Session
	var err error
	c.bounded("Open of an unreachable backend", func() { s, err = TryOpen(c.t, context.Background(), c.tg.Backend, DefaultInfo(), NewSink()) })
	if err == nil || s != nil {
		c.t.Errorf("Open = %v, %v; want an error", s, err)
	}
	c.released("after a failed Open")
}
