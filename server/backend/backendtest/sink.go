package backendtest

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/voicegateway/voicegateway/server/backend"
	"github.com/voicegateway/voicegateway/server/protocol"
)

// WaitTimeout bounds every wait of the kit; it is only reached when a test
// is about to fail.
const WaitTimeout = 10 * time.Second

// Kind is which Sink method a backend called.
type Kind int

const (
	// KindEvent is Sink.Event: an event the session encodes and stamps.
	KindEvent Kind = iota + 1
	// KindRaw is Sink.Raw: JSON the session passes on unchanged.
	KindRaw
	// KindAudio is Sink.Audio: output audio, binary or base64 as the
	// client negotiated.
	KindAudio
)

func (k Kind) String() string {
	switch k {
	case KindEvent:
		return "event"
	case KindRaw:
		return "raw"
	case KindAudio:
		return "audio"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Record is one thing a backend sent its client.
type Record struct {
	Kind Kind
	// Type is the event's type; empty for audio.
	Type string
	// JSON is the event as the client reads it: encoded with the next
	// event_id as the session encodes it, or the raw bytes as given.
	JSON []byte
	// Object is JSON decoded, for looking at fields.
	Object map[string]any
	// Ref and PCM are an Audio call's arguments; PCM is a copy.
	Ref protocol.ContentRef
	PCM []byte
}

// Sink is a backend.Sink that records what a backend sends to its session,
// and can play an ending session: once closed, every call returns the close
// error (backend.ErrSessionClosed unless a test chooses another), as the
// sink of a session that has ended does. It is safe for concurrent use by
// the reader (Handle) and every goroutine of the backend.
//
// It also notes what no backend may do, as violations that the Session
// harness reports when the test ends: Raw data that is not one JSON object
// with a string type, audio that is not whole PCM16 samples, a Fail that is
// not fatal or has no documented code or close code, and any call after the
// connection's Close has returned or still running when it returns.
type Sink struct {
	mu sync.Mutex
	// changed is closed and replaced on every change.
	changed  chan struct{}
	records  []Record
	chunks   int
	fails    []*protocol.Error
	closed   bool
	closeErr error
	// closeWhen, when set, is asked before each call with the event type
	// or "audio" and the number of audio chunks taken so far; once it
	// says so the sink closes.
	closeWhen func(kind string, chunks int) bool
	seq       uint64
	// onFail runs after a Fail, outside the lock: the Session harness ends
	// the session's context there, as a session does.
	onFail func()
	// sealed is set when the connection's Close has returned.
	sealed     bool
	violations []string
	// inflight counts calls that have not returned; delay is how long
	// each takes.
	inflight int
	delay    time.Duration
}

var _ backend.Sink = (*Sink)(nil)

// NewSink returns an open, empty sink.
func NewSink() *Sink {
	return &Sink{changed: make(chan struct{}), closeErr: backend.ErrSessionClosed}
}

// notifyLocked wakes every waiter. s.mu must be held.
func (s *Sink) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Sink) violateLocked(format string, args ...any) {
	s.violations = append(s.violations, fmt.Sprintf(format, args...))
}

// admitLocked checks a call and reports whether it may go through. s.mu
// must be held.
func (s *Sink) admitLocked(call, kind string) bool {
	if s.sealed {
		s.violateLocked("%s (%s) after the connection's Close returned", call, kind)
	}
	if !s.closed && s.closeWhen != nil && s.closeWhen(kind, s.chunks) {
		s.closed = true
		s.notifyLocked()
	}
	return !s.closed
}

func (s *Sink) add(r Record) {
	s.records = append(s.records, r)
	if r.Kind == KindAudio {
		s.chunks++
	}
	s.notifyLocked()
}

// Event implements backend.Sink.
func (s *Sink) Event(ev protocol.Event) error {
	s.enter()
	defer s.leave()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	data, err := protocol.Marshal(ev, protocol.EventID(s.seq))
	if err != nil {
		s.violateLocked("Event %T does not encode: %v", ev, err)
		return err
	}
	r := decoded(KindEvent, data)
	if !s.admitLocked("Event", r.Type) {
		return s.closeErr
	}
	s.add(r)
	return nil
}

// Raw implements backend.Sink.
func (s *Sink) Raw(data []byte) error {
	s.enter()
	defer s.leave()
	r := decoded(KindRaw, data)
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.Object == nil || r.Type == "" {
		s.violateLocked("Raw data is not one JSON object with a type: %.100q", data)
	}
	if !s.admitLocked("Raw", r.Type) {
		return s.closeErr
	}
	s.add(r)
	return nil
}

// Audio implements backend.Sink.
func (s *Sink) Audio(ref protocol.ContentRef, pcm []byte) error {
	s.enter()
	defer s.leave()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(pcm)%2 != 0 {
		s.violateLocked("Audio of %d bytes is not whole PCM16 samples", len(pcm))
	}
	if !s.admitLocked("Audio", "audio") {
		return s.closeErr
	}
	s.add(Record{Kind: KindAudio, Ref: ref, PCM: slices.Clone(pcm)})
	return nil
}

// Fail implements backend.Sink: it records err and closes the sink.
func (s *Sink) Fail(err *protocol.Error) {
	s.mu.Lock()
	switch {
	case err == nil:
		s.violateLocked("Fail(nil)")
	case !err.Fatal || err.CloseCode < 1000 || !slices.Contains(protocol.AllCodes, err.Code):
		s.violateLocked("Fail(%+v): a session ends with a fatal error, a documented code and a close code", *err)
	}
	if s.sealed {
		s.violateLocked("Fail after the connection's Close returned")
	}
	s.fails = append(s.fails, err)
	s.closed = true
	s.notifyLocked()
	onFail := s.onFail
	s.mu.Unlock()
	if onFail != nil {
		onFail()
	}
}

// enter and leave bracket a call, which takes the sink's delay.
func (s *Sink) enter() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inflight++
	s.notifyLocked()
}

func (s *Sink) leave() {
	s.mu.Lock()
	delay := s.delay
	s.mu.Unlock()
	if delay > 0 {
		time.Sleep(delay)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inflight--
	s.notifyLocked()
}

// SetDelay makes every later Event, Raw and Audio call take d before it
// returns, as when the session's outbound queue is contended. It widens
// the moment in which a backend is inside a call (see WaitBusy), so that a
// Close that does not wait for its goroutines is caught returning while
// one still sends.
func (s *Sink) SetDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

func decoded(kind Kind, data []byte) Record {
	r := Record{Kind: kind, JSON: slices.Clone(data)}
	if json.Unmarshal(data, &r.Object) == nil {
		r.Type, _ = r.Object["type"].(string)
	}
	return r
}

// Close makes every later call return the close error, as when the
// session has ended (a slow client, a drain deadline).
func (s *Sink) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		s.notifyLocked()
	}
}

// CloseWhen closes the sink at the first call for which f returns true. f
// is called with the sink's lock held, with the event type (or "audio")
// and the number of audio chunks taken so far.
func (s *Sink) CloseWhen(f func(kind string, chunks int) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeWhen = f
}

// SetCloseErr sets what a closed sink returns.
func (s *Sink) SetCloseErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeErr = err
}

// Closed reports whether the sink refuses calls.
func (s *Sink) Closed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// seal marks the connection's Close as returned: nothing may call after,
// and no call may still be running.
func (s *Sink) seal() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sealed = true
	if s.inflight > 0 {
		s.violateLocked("the connection's Close returned while %d Sink calls were still running", s.inflight)
	}
}

// Violations returns what the backend did that no backend may do.
func (s *Sink) Violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.violations)
}

// Records returns everything sent so far, in order.
func (s *Sink) Records() []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.records)
}

// Events returns the events (Event and Raw calls) sent so far.
func (s *Sink) Events() []Record {
	var out []Record
	for _, r := range s.Records() {
		if r.Kind != KindAudio {
			out = append(out, r)
		}
	}
	return out
}

// Types returns the types of the events sent so far.
func (s *Sink) Types() []string {
	var out []string
	for _, r := range s.Events() {
		out = append(out, r.Type)
	}
	return out
}

// Count returns how many events of type typ were sent.
func (s *Sink) Count(typ string) int {
	n := 0
	for _, got := range s.Types() {
		if got == typ {
			n++
		}
	}
	return n
}

// Last returns the last event sent, or the zero Record.
func (s *Sink) Last() Record {
	events := s.Events()
	if len(events) == 0 {
		return Record{}
	}
	return events[len(events)-1]
}

// Chunks returns the Audio calls so far.
func (s *Sink) Chunks() []Record {
	var out []Record
	for _, r := range s.Records() {
		if r.Kind == KindAudio {
			out = append(out, r)
		}
	}
	return out
}

// Failures returns every error the backend failed the session with.
func (s *Sink) Failures() []*protocol.Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.fails)
}

// Audio delta event types: the GA name and the beta one some upstreams
// still send.
const (
	typeAudioDelta     = protocol.TypeOutputAudioDelta
	typeBetaAudioDelta = "response.audio.delta"
)

// IsAudioDelta reports whether r is an audio delta event.
func IsAudioDelta(r Record) bool {
	return r.Kind != KindAudio && (r.Type == typeAudioDelta || r.Type == typeBetaAudioDelta)
}

// OutputAudio returns the PCM of response respID as a client hears it:
// Audio calls and the base64 deltas of audio delta events, in order. An
// empty respID takes every response's audio. A delta that is not base64
// adds nothing, so a comparison with the audio sent fails.
func (s *Sink) OutputAudio(respID string) []byte {
	var pcm []byte
	for _, r := range s.Records() {
		switch {
		case r.Kind == KindAudio:
			if respID == "" || r.Ref.ResponseID == respID {
				pcm = append(pcm, r.PCM...)
			}
		case IsAudioDelta(r):
			if id, _ := r.Object["response_id"].(string); respID == "" || id == respID {
				delta, _ := r.Object["delta"].(string)
				b, _ := base64.StdEncoding.DecodeString(delta)
				pcm = append(pcm, b...)
			}
		}
	}
	return pcm
}

// watch returns a channel that is closed at the next change.
func (s *Sink) watch() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// Wait blocks until cond holds, or fails the test after WaitTimeout. cond
// is called without the sink's lock, so it may call the sink's methods.
func (s *Sink) Wait(t testing.TB, what string, cond func() bool) {
	t.Helper()
	timeout := time.NewTimer(WaitTimeout)
	defer timeout.Stop()
	for {
		changed := s.watch()
		if cond() {
			return
		}
		select {
		case <-changed:
		case <-timeout.C:
			t.Fatalf("timed out after %s waiting for %s; events so far: %v; audio chunks: %d; fails: %v",
				WaitTimeout, what, s.Types(), len(s.Chunks()), s.Failures())
		}
	}
}

// WaitType waits for the n-th (1-based) event of type typ and returns it.
func (s *Sink) WaitType(t testing.TB, typ string, n int) Record {
	t.Helper()
	var found Record
	s.Wait(t, fmt.Sprintf("%s #%d", typ, n), func() bool {
		seen := 0
		for _, r := range s.Events() {
			if r.Type == typ {
				if seen++; seen == n {
					found = r
					return true
				}
			}
		}
		return false
	})
	return found
}

// WaitChunks waits until n Audio calls have been taken.
func (s *Sink) WaitChunks(t testing.TB, n int) {
	t.Helper()
	s.Wait(t, fmt.Sprintf("%d audio chunks", n), func() bool { return len(s.Chunks()) >= n })
}

// WaitBusy waits until a backend goroutine is inside a call to the sink.
func (s *Sink) WaitBusy(t testing.TB) {
	t.Helper()
	s.Wait(t, "a call in progress", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.inflight > 0
	})
}

// WaitFail waits until the backend fails the session and returns the first
// error.
func (s *Sink) WaitFail(t testing.TB) *protocol.Error {
	t.Helper()
	s.Wait(t, "the session to fail", func() bool { return len(s.Failures()) > 0 })
	return s.Failures()[0]
}
