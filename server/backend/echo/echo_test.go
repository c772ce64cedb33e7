package echo_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/voicegateway/voicegateway/internal/testkit"
	"github.com/voicegateway/voicegateway/server/backend"
	"github.com/voicegateway/voicegateway/server/backend/backendtest"
	"github.com/voicegateway/voicegateway/server/backend/echo"
	"github.com/voicegateway/voicegateway/server/memory"
	"github.com/voicegateway/voicegateway/server/metrics"
	"github.com/voicegateway/voicegateway/server/protocol"
)

// randomPCM returns n bytes of reproducible noise.
func randomPCM(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, 0))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func appendMsg(pcm []byte) string {
	return `{"type":"input_audio_buffer.append","audio":"` + base64.StdEncoding.EncodeToString(pcm) + `"}`
}

const (
	commitMsg = `{"type":"input_audio_buffer.commit"}`
	clearMsg  = `{"type":"input_audio_buffer.clear"}`
	createMsg = `{"type":"response.create"}`
	cancelMsg = `{"type":"response.cancel"}`
)

// chunkBytes is 20 ms of PCM16 mono at rate.
func chunkBytes(rate int) int { return rate * 2 / 50 }

func wantInvalid(t *testing.T, err *protocol.Error, param string) {
	t.Helper()
	if err == nil {
		t.Fatal("event accepted, want invalid_event")
	}
	if err.Code != protocol.CodeInvalidEvent || err.Fatal || err.Param != param || err.Message == "" {
		t.Fatalf("error = %+v, want a non-fatal invalid_event with param %q", err, param)
	}
}

func wantBufferFull(t *testing.T, err *protocol.Error) {
	t.Helper()
	if err == nil {
		t.Fatal("accepted, want buffer_full")
	}
	if err.Code != protocol.CodeBufferFull || err.Fatal || err.Message == "" {
		t.Fatalf("error = %+v, want a non-fatal buffer_full", err)
	}
}

func TestOpenSendsSessionCreated(t *testing.T) {
	tests := []struct {
		name          string
		info          backend.Info
		wantTransport string
	}{
		{
			name:          "base64 audio at 24 kHz",
			info:          backend.Info{SessionID: "sess_a", SampleRate: 24000, MaxMessageBytes: 1 << 20},
			wantTransport: "base64",
		},
		{
			name:          "binary audio at 16 kHz",
			info:          backend.Info{SessionID: "sess_b", SampleRate: 16000, BinaryAudio: true, MaxMessageBytes: 256 << 10},
			wantTransport: "binary",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := open(t, tt.info, backendtest.NewSink())
			if got := h.Sink.Types(); !reflect.DeepEqual(got, []string{protocol.TypeSessionCreated}) {
				t.Fatalf("events after Open = %v, want just session.created", got)
			}
			ev := h.Sink.Last().Object
			rate := float64(tt.info.SampleRate)
			format := map[string]any{"type": "audio/pcm", "rate": rate}
			vad := map[string]any{"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300.0, "silence_duration_ms": 500.0,
				"create_response": true, "interrupt_response": true}
			want := map[string]any{
				"type":     "session.created",
				"event_id": "event_1",
				"session": map[string]any{
					"type": "realtime", "object": "realtime.session", "id": tt.info.SessionID, "model": "echo",
					"output_modalities": []any{"audio"}, "instructions": "",
					"audio": map[string]any{
						"input":  map[string]any{"format": format, "turn_detection": vad},
						"output": map[string]any{"format": format, "voice": "echo"},
					},
				},
				"gateway": map[string]any{
					"session_id": tt.info.SessionID, "audio_transport": tt.wantTransport,
					"sample_rate": rate, "max_message_bytes": float64(tt.info.MaxMessageBytes),
				},
			}
			if !reflect.DeepEqual(ev, want) {
				t.Errorf("session.created =\n%v\nwant\n%v", ev, want)
			}
		})
	}
}

func TestBackendName(t *testing.T) {
	if got := echo.New(nil).Name(); got != "echo" || echo.Name != "echo" {
		t.Errorf("Name() = %q", got)
	}
}

// TestOpenFailsOnClosedSink: when session.created cannot be sent, Open fails
// and starts nothing (TestMain's leak check would catch a speaker).
func TestOpenFailsOnClosedSink(t *testing.T) {
	sink := backendtest.NewSink()
	sink.Close()
	s, err := backendtest.TryOpen(t, t.Context(), echo.New(nil), defaultInfo(), sink)
	if !errors.Is(err, backend.ErrSessionClosed) || s != nil {
		t.Fatalf("Open = %v, %v; want nil, ErrSessionClosed", s, err)
	}
}

func TestSessionUpdate(t *testing.T) {
	tests := []struct {
		name             string
		session          string
		wantParam        string // empty: accepted
		wantInstructions string // after the update
	}{
		{name: "instructions applied", session: `{"instructions":"answer in French"}`, wantInstructions: "answer in French"},
		{name: "empty update", session: `{}`},
		{name: "matching formats", session: `{"audio":{"input":{"format":{"type":"audio/pcm","rate":24000}},"output":{"format":{"type":"audio/pcm","rate":24000}}},"instructions":"x"}`,
			wantInstructions: "x"},
		{name: "format type only", session: `{"audio":{"input":{"format":{"type":"audio/pcm"}}}}`},
		{name: "rate only", session: `{"audio":{"output":{"format":{"rate":24000}}}}`},
		{name: "null directions", session: `{"audio":{"input":null,"output":{"format":null}}}`},
		{name: "unknown fields ignored", session: `{"voice":"alloy","turn_detection":null,"tools":[]}`},
		{name: "other input format", session: `{"audio":{"input":{"format":{"type":"audio/pcmu"}}}}`, wantParam: "session.audio"},
		{name: "other input rate", session: `{"audio":{"input":{"format":{"type":"audio/pcm","rate":16000}}}}`, wantParam: "session.audio"},
		{name: "other output rate", session: `{"audio":{"output":{"format":{"rate":48000}}}}`, wantParam: "session.audio"},
		{name: "other output format", session: `{"audio":{"output":{"format":{"type":"audio/pcma","rate":24000}}}}`, wantParam: "session.audio"},
		{name: "bad format leaves instructions alone", session: `{"instructions":"x","audio":{"input":{"format":{"rate":8000}}}}`, wantParam: "session.audio"},
		{name: "instructions of the wrong type", session: `{"instructions":42}`, wantParam: "session"},
		{name: "audio of the wrong type", session: `{"audio":"pcm"}`, wantParam: "session"},
		{name: "rate of the wrong type", session: `{"audio":{"input":{"format":{"rate":"24000"}}}}`, wantParam: "session"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := open(t, defaultInfo(), backendtest.NewSink())
			err := h.Send(`{"type":"session.update","session":` + tt.session + `}`)
			if tt.wantParam != "" {
				wantInvalid(t, err, tt.wantParam)
				if n := h.Sink.Count(protocol.TypeSessionUpdated); n != 0 {
					t.Fatalf("a rejected update sent %d session.updated", n)
				}
				// The session is unchanged: an empty update reports it.
				h.MustSend(`{"type":"session.update","session":{}}`)
			} else if err != nil {
				t.Fatalf("update rejected: %v", err)
			}
			ev := h.Sink.Last().Object
			if ev["type"] != protocol.TypeSessionUpdated {
				t.Fatalf("last event = %v, want session.updated", ev)
			}
			session := ev["session"].(map[string]any)
			if session["instructions"] != tt.wantInstructions {
				t.Errorf("instructions = %q, want %q", session["instructions"], tt.wantInstructions)
			}
			if session["id"] != "sess_test" || session["model"] != "echo" {
				t.Errorf("session = %v", session)
			}
			format := session["audio"].(map[string]any)["input"].(map[string]any)["format"]
			if want := map[string]any{"type": "audio/pcm", "rate": 24000.0}; !reflect.DeepEqual(format, want) {
				t.Errorf("input format = %v, want %v", format, want)
			}
		})
	}
}

func TestSessionUpdateKeepsEarlierInstructions(t *testing.T) {
	h := open(t, defaultInfo(), backendtest.NewSink())
	h.MustSend(`{"type":"session.update","session":{"instructions":"first"}}`)
	h.MustSend(`{"type":"session.update","session":{"audio":{"input":{"format":{"type":"audio/pcm"}}}}}`)
	if got := h.Sink.Last().Object["session"].(map[string]any)["instructions"]; got != "first" {
		t.Errorf("instructions = %q, want them kept", got)
	}
	h.MustSend(`{"type":"session.update","session":{"instructions":""}}`)
	if got := h.Sink.Last().Object["session"].(map[string]any)["instructions"]; got != "" {
		t.Errorf("instructions = %q, want them cleared", got)
	}
}

func TestEchoesCommittedAudio(t *testing.T) {
	tests := []struct {
		name       string
		rate       int
		inputBytes int
		wantChunks []int
	}{
		{name: "24 kHz, partial last chunk", rate: 24000, inputBytes: 3*960 + 480, wantChunks: []int{960, 960, 960, 480}},
		{name: "24 kHz, whole chunks", rate: 24000, inputBytes: 2 * 960, wantChunks: []int{960, 960}},
		{name: "24 kHz, less than a chunk", rate: 24000, inputBytes: 2, wantChunks: []int{2}},
		{name: "16 kHz", rate: 16000, inputBytes: 640 + 100, wantChunks: []int{640, 100}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := defaultInfo()
			info.SampleRate = tt.rate
			h := open(t, info, backendtest.NewSink())
			input := randomPCM(uint64(tt.inputBytes), tt.inputBytes)
			// Append in uneven pieces, as text and as binary messages.
			for off, i := 0, 0; off < len(input); i++ {
				end := min(off+2*(37+i*50), len(input))
				var err *protocol.Error
				if i%2 == 0 {
					err = h.Send(appendMsg(input[off:end]))
				} else {
					err = h.SendBinary(input[off:end])
				}
				if err != nil {
					t.Fatalf("append: %v", err)
				}
				off = end
			}
			// Loud audio is speech to the default turn detection; it has
			// not stopped when the client commits.
			wantAppend := []string{protocol.TypeSessionCreated, protocol.TypeSpeechStarted}
			if tt.inputBytes < 2*tt.rate/100 {
				wantAppend = wantAppend[:1] // less than one 10 ms frame: no speech seen
			}
			if got := h.Sink.Types(); !reflect.DeepEqual(got, wantAppend) {
				t.Fatalf("append sent events: %v", got)
			}
			h.MustSend(commitMsg)

			committed := h.Sink.WaitType(t, protocol.TypeInputAudioCommitted, 1).Object
			if committed["item_id"] != "item_1" || committed["previous_item_id"] != nil {
				t.Errorf("committed = %v", committed)
			}
			if _, ok := committed["previous_item_id"]; !ok {
				t.Error("previous_item_id is omitted, want null")
			}
			created := h.Sink.WaitType(t, protocol.TypeResponseCreated, 1).Object
			if resp := created["response"].(map[string]any); resp["id"] != "resp_1" || resp["status"] != "in_progress" || resp["object"] != "realtime.response" {
				t.Errorf("response.created = %v", created)
			}

			// The first chunk goes out at once; the next waits for the clock.
			h.Sink.WaitChunks(t, 1)
			if len(tt.wantChunks) > 1 {
				time.Sleep(5 * time.Millisecond)
				if n := len(h.Sink.Chunks()); n != 1 {
					t.Fatalf("%d chunks sent before the clock moved, want 1", n)
				}
			}
			done := h.play(0, len(tt.wantChunks), 1)
			if resp := done["response"].(map[string]any); resp["id"] != "resp_1" || resp["status"] != "completed" {
				t.Errorf("response.done = %v", done)
			}

			chunks := h.Sink.Chunks()
			var sizes []int
			var got []byte
			for _, c := range chunks {
				sizes = append(sizes, len(c.PCM))
				got = append(got, c.PCM...)
				if c.Ref != (protocol.ContentRef{ResponseID: "resp_1", ItemID: "item_echo_1"}) {
					t.Errorf("chunk ref = %+v", c.Ref)
				}
			}
			if !reflect.DeepEqual(sizes, tt.wantChunks) {
				t.Errorf("chunk sizes = %v, want %v", sizes, tt.wantChunks)
			}
			if !bytes.Equal(got, input) {
				t.Error("the echoed audio differs from the input")
			}

			wantTypes := []string{
				protocol.TypeSessionCreated, protocol.TypeSpeechStarted,
				protocol.TypeInputAudioCommitted, protocol.TypeItemAdded, protocol.TypeItemDone,
				protocol.TypeResponseCreated, protocol.TypeOutputItemAdded, protocol.TypeItemAdded, protocol.TypeContentPartAdded,
				protocol.TypeOutputAudioDone, protocol.TypeOutputTranscriptDelta, protocol.TypeOutputTranscriptDone,
				protocol.TypeContentPartDone, protocol.TypeOutputItemDone, protocol.TypeItemDone, protocol.TypeResponseDone,
			}
			if got := h.Sink.Events(); len(got) > 0 && got[1].Type != protocol.TypeSpeechStarted {
				wantTypes = append(wantTypes[:1], wantTypes[2:]...) // less than one 10 ms frame: no speech seen
			}
			if got := h.Sink.Types(); !reflect.DeepEqual(got, wantTypes) {
				t.Fatalf("events = %v, want %v", got, wantTypes)
			}
			transcript := fmt.Sprintf("(echo of %.2f s of audio)", float64(tt.inputBytes)/float64(2*tt.rate))
			delta := h.Sink.WaitType(t, protocol.TypeOutputTranscriptDelta, 1).Object
			tdone := h.Sink.WaitType(t, protocol.TypeOutputTranscriptDone, 1).Object
			adone := h.Sink.WaitType(t, protocol.TypeOutputAudioDone, 1).Object
			if delta["delta"] != transcript || tdone["transcript"] != transcript {
				t.Errorf("transcript delta %q, done %q, want %q", delta["delta"], tdone["transcript"], transcript)
			}
			for _, ev := range []map[string]any{delta, tdone, adone} {
				if ev["response_id"] != "resp_1" || ev["item_id"] != "item_echo_1" || ev["output_index"] != 0.0 || ev["content_index"] != 0.0 {
					t.Errorf("%s locates the wrong content: %v", ev["type"], ev)
				}
			}

			// A second turn follows the first.
			second := randomPCM(99, 4)
			h.MustSend(appendMsg(second))
			h.MustSend(commitMsg)
			committed = h.Sink.WaitType(t, protocol.TypeInputAudioCommitted, 2).Object
			if committed["item_id"] != "item_2" || committed["previous_item_id"] != "item_echo_1" {
				t.Errorf("second committed = %v", committed)
			}
			done = h.play(len(chunks), 1, 2)
			if resp := done["response"].(map[string]any); resp["id"] != "resp_2" || resp["status"] != "completed" {
				t.Errorf("second response.done = %v", done)
			}
			last := h.Sink.Chunks()[len(chunks)]
			if !bytes.Equal(last.PCM, second) || last.Ref.ItemID != "item_echo_2" || last.Ref.ResponseID != "resp_2" {
				t.Errorf("second turn echoed %+v", last)
			}
		})
	}
}

func TestResponseCreateReplaysLastTurn(t *testing.T) {
	h := open(t, defaultInfo(), backendtest.NewSink())
	// Before any turn, a response is answered too (with nothing to echo).
	h.MustSend(createMsg)
	if tdone := h.Sink.WaitType(t, protocol.TypeOutputTranscriptDone, 1).Object; tdone["transcript"] != "(nothing to echo yet)" {
		t.Errorf("first response says %q", tdone["transcript"])
	}
	h.Sink.WaitType(t, protocol.TypeResponseDone, 1)
	input := randomPCM(1, 960+2)
	h.MustSend(appendMsg(input))
	h.MustSend(commitMsg)
	h.play(0, 2, 2)

	h.MustSend(`{"type":"response.create","response":{"instructions":"again"}}`)
	done := h.play(2, 2, 3)
	if resp := done["response"].(map[string]any); resp["id"] != "resp_3" || resp["status"] != "completed" {
		t.Errorf("response.done = %v", done)
	}
	chunks := h.Sink.Chunks()
	if got := append(append([]byte(nil), chunks[2].PCM...), chunks[3].PCM...); !bytes.Equal(got, input) {
		t.Error("response.create did not replay the last committed audio")
	}
	if chunks[2].Ref.ItemID != "item_echo_3" {
		t.Errorf("replay ref = %+v", chunks[2].Ref)
	}
	if n := h.Sink.Count(protocol.TypeInputAudioCommitted); n != 1 {
		t.Errorf("response.create committed %d items", n)
	}
}

func TestCommitEmptyBuffer(t *testing.T) {
	h := open(t, defaultInfo(), backendtest.NewSink())
	wantInvalid(t, h.Send(commitMsg), "")
	// Committing clears the buffer, so a second commit is empty too.
	h.MustSend(appendMsg([]byte{1, 2}))
	h.MustSend(commitMsg)
	h.play(0, 1, 1)
	wantInvalid(t, h.Send(commitMsg), "")
	if n := h.Sink.Count(protocol.TypeInputAudioCommitted); n != 1 {
		t.Errorf("%d committed events, want 1", n)
	}
}

func TestClear(t *testing.T) {
	h := open(t, defaultInfo(), backendtest.NewSink())
	h.MustSend(appendMsg(randomPCM(2, 960)))
	h.MustSend(`{"type":"input_audio_buffer.clear","event_id":"evt_c"}`)
	if ev := h.Sink.Last().Object; ev["type"] != protocol.TypeInputAudioCleared {
		t.Fatalf("last event = %v, want input_audio_buffer.cleared", ev)
	}
	wantInvalid(t, h.Send(commitMsg), "")
	// Clearing an empty buffer is fine too.
	h.MustSend(clearMsg)
	if n := h.Sink.Count(protocol.TypeInputAudioCleared); n != 2 {
		t.Errorf("%d cleared events, want 2", n)
	}
	// The buffer is usable after a clear.
	h.MustSend(appendMsg([]byte{5, 6}))
	h.MustSend(commitMsg)
	h.play(0, 1, 1)
	if got := h.Sink.Chunks(); len(got) != 1 || !bytes.Equal(got[0].PCM, []byte{5, 6}) {
		t.Errorf("echo after clear = %+v, want only the audio appended after it", got)
	}
}

func TestCancelMidResponse(t *testing.T) {
	h := open(t, defaultInfo(), backendtest.NewSink())
	h.MustSend(appendMsg(randomPCM(3, 5*960)))
	h.MustSend(commitMsg)
	h.Sink.WaitChunks(t, 1)
	h.MustSend(`{"type":"response.cancel","response_id":"resp_1"}`)
	h.tick()
	done := h.Sink.WaitType(t, protocol.TypeResponseDone, 1).Object
	if resp := done["response"].(map[string]any); resp["id"] != "resp_1" || resp["status"] != "cancelled" {
		t.Errorf("response.done = %v, want resp_1 cancelled", done)
	}
	if n := len(h.Sink.Chunks()); n != 1 {
		t.Errorf("%d chunks sent, want none after the cancel", n)
	}
	if last := h.Sink.Types(); last[len(last)-1] != protocol.TypeResponseDone {
		t.Errorf("events = %v, want response.done last", last)
	}

	// A cancel does not affect the next turn.
	h.MustSend(appendMsg(randomPCM(4, 2*960)))
	h.MustSend(commitMsg)
	done = h.play(1, 2, 2)
	if resp := done["response"].(map[string]any); resp["id"] != "resp_2" || resp["status"] != "completed" {
		t.Errorf("next response.done = %v", done)
	}
}

func TestCancelDropsQueuedTurns(t *testing.T) {
	h := open(t, defaultInfo(), backendtest.NewSink())
	h.manual()
	h.MustSend(appendMsg(randomPCM(6, 3*960)))
	h.turn()
	h.Sink.WaitChunks(t, 1)
	h.MustSend(appendMsg(randomPCM(7, 960)))
	h.turn() // item_2, queued behind item_1
	h.MustSend(cancelMsg)
	h.tick()
	h.Sink.WaitType(t, protocol.TypeResponseDone, 1)

	h.MustSend(appendMsg([]byte{9, 9}))
	h.turn() // item_3
	done := h.play(1, 1, 2)
	if resp := done["response"].(map[string]any); resp["id"] != "resp_3" || resp["status"] != "completed" {
		t.Errorf("response.done = %v", done)
	}
	chunks := h.Sink.Chunks()
	if len(chunks) != 2 || chunks[1].Ref.ItemID != "item_echo_3" {
		t.Errorf("after the cancel the echo played %+v, want only item_3", chunks[1:])
	}
}

func TestOversizeBufferRejected(t *testing.T) {
	const rate = 16000
	info := defaultInfo()
	info.SampleRate = rate
	h := open(t, info, backendtest.NewSink())
	h.manual()
	limit := rate * 2 * 60 // 60 s of PCM16

	if err := h.SendBinary(make([]byte, limit-2)); err != nil {
		t.Fatalf("59.99 s rejected: %v", err)
	}
	wantBufferFull(t, h.SendBinary(make([]byte, 4)))
	wantBufferFull(t, h.Send(appendMsg(make([]byte, 4))))
	// The rejected appends did not grow the buffer: exactly one more
	// sample still fits, and then nothing.
	if err := h.SendBinary([]byte{1, 2}); err != nil {
		t.Fatalf("the last sample before 60 s rejected: %v", err)
	}
	wantBufferFull(t, h.SendBinary([]byte{3, 4}))

	h.turn()
	h.Sink.WaitChunks(t, 1)
	h.MustSend(cancelMsg)
	h.tick()
	tdone := h.Sink.WaitType(t, protocol.TypeOutputTranscriptDone, 1).Object
	if tdone["transcript"] != "(echo of 60.00 s of audio)" {
		t.Errorf("transcript = %q, want 60 s", tdone["transcript"])
	}
	// A commit empties the buffer, so there is room again.
	if err := h.SendBinary(make([]byte, limit)); err != nil {
		t.Fatalf("after a commit 60 s rejected: %v", err)
	}
	// And so does a clear.
	h.MustSend(clearMsg)
	if err := h.SendBinary(make([]byte, limit)); err != nil {
		t.Fatalf("after a clear 60 s rejected: %v", err)
	}
}

func TestTooManyPendingTurns(t *testing.T) {
	h := open(t, defaultInfo(), backendtest.NewSink())
	h.manual()
	h.MustSend(appendMsg(randomPCM(8, 2*960)))
	h.turn()
	h.Sink.WaitChunks(t, 1) // the speaker holds the first turn; the queue is empty

	accepted := 0
	var rejected *protocol.Error
	for range 100 {
		if err := h.Send(createMsg); err != nil {
			rejected = err
			break
		}
		accepted++
	}
	if accepted != 32 {
		t.Errorf("%d turns queued, want 32", accepted)
	}
	wantBufferFull(t, rejected)
	// A commit still commits: with turn detection off it asks for no
	// response.
	h.MustSend(appendMsg([]byte{1, 2}))
	h.MustSend(commitMsg)

	// Cancelling empties the queue.
	h.MustSend(cancelMsg)
	h.tick()
	h.Sink.WaitType(t, protocol.TypeResponseDone, 1)
	h.MustSend(createMsg)
	done := h.play(1, 1, 2)
	if resp := done["response"].(map[string]any); resp["id"] != "resp_34" || resp["status"] != "completed" {
		t.Errorf("response.done = %v", done)
	}
	if n := h.Sink.Count(protocol.TypeResponseCreated); n != 2 {
		t.Errorf("%d responses, want 2", n)
	}
}

// TestQueuedAudioBounded: the turns waiting to be echoed hold at most 60 s
// of audio between them, so 32 turns of 60 s each cannot pile up.
func TestQueuedAudioBounded(t *testing.T) {
	const rate = 16000
	info := defaultInfo()
	info.SampleRate = rate
	h := open(t, info, backendtest.NewSink())
	h.manual()
	half := rate * 2 * 30 // 30 s of PCM16

	h.MustSend(appendMsg(randomPCM(12, 2*640)))
	h.turn()
	h.Sink.WaitChunks(t, 1) // playing; the queue is empty

	for range 2 {
		if err := h.SendBinary(make([]byte, half)); err != nil {
			t.Fatal(err)
		}
		h.turn()
	}
	// 60 s are queued: neither a new turn nor a replay fits.
	h.MustSend(appendMsg([]byte{1, 2}))
	h.MustSend(commitMsg)
	wantBufferFull(t, h.Send(createMsg))

	// Cancelling frees the queue.
	h.MustSend(cancelMsg)
	h.tick()
	h.Sink.WaitType(t, protocol.TypeResponseDone, 1)
	if err := h.SendBinary(make([]byte, 2*half)); err != nil {
		t.Fatal(err)
	}
	h.turn()
	h.Sink.WaitChunks(t, 2)
	h.MustSend(cancelMsg)
	h.tick()
	done := h.Sink.WaitType(t, protocol.TypeResponseDone, 2).Object
	if resp := done["response"].(map[string]any); resp["status"] != "cancelled" {
		t.Errorf("response.done = %v", done)
	}
	if tdone := h.Sink.WaitType(t, protocol.TypeOutputTranscriptDone, 2).Object; tdone["transcript"] != "(echo of 60.00 s of audio)" {
		t.Errorf("transcript = %q, want the 60 s turn", tdone["transcript"])
	}
}

func TestUnknownEventRejected(t *testing.T) {
	h := open(t, defaultInfo(), backendtest.NewSink())
	for _, msg := range []string{
		`{"type":"conversation.no_such_event"}`,
		`{"type":"session.created"}`,
		`{"type":"gateway.draining"}`,
	} {
		err := h.Send(msg)
		wantInvalid(t, err, "type")
		if !strings.Contains(err.Message, "echo") {
			t.Errorf("message %q does not name the backend", err.Message)
		}
	}
	if got := h.Sink.Types(); len(got) != 1 {
		t.Errorf("unknown events produced %v", got[1:])
	}
}

func TestSinkErrorOnReaderIsFatal(t *testing.T) {
	sink := backendtest.NewSink()
	h := open(t, defaultInfo(), sink)
	sink.SetCloseErr(errors.New("queue broken"))
	sink.CloseWhen(func(kind string, _ int) bool { return kind == protocol.TypeInputAudioCleared })
	err := h.Send(clearMsg)
	if err == nil || !err.Fatal || err.Code != protocol.CodeInternal || err.CloseCode != protocol.CloseInternalError {
		t.Fatalf("Handle = %+v, want a fatal internal error", err)
	}
}

// TestSpeakerStopsOnSessionClosed: once the sink reports the session
// closed, the speaker goroutine ends by itself, before Close.
func TestSpeakerStopsOnSessionClosed(t *testing.T) {
	tests := []struct {
		name      string
		closeWhen func(kind string, chunks int) bool
	}{
		{name: "at response.created", closeWhen: func(kind string, _ int) bool { return kind == protocol.TypeResponseCreated }},
		{name: "at the first chunk", closeWhen: func(kind string, _ int) bool { return kind == "audio" }},
		{name: "at a later chunk", closeWhen: func(kind string, n int) bool { return kind == "audio" && n == 2 }},
		{name: "at the transcript", closeWhen: func(kind string, _ int) bool { return kind == protocol.TypeOutputTranscriptDelta }},
		{name: "at response.done", closeWhen: func(kind string, _ int) bool { return kind == protocol.TypeResponseDone }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := backendtest.NewSink()
			sink.CloseWhen(tt.closeWhen)
			h := open(t, defaultInfo(), sink)
			h.MustSend(appendMsg(randomPCM(10, 4*960)))
			h.MustSend(commitMsg)
			// Play until the sink closes: wait for each chunk (or the close),
			// then move the clock.
			for step := 1; ; step++ {
				if step > 10 {
					t.Fatal("the sink was never closed")
				}
				sink.Wait(t, "a chunk or the close", func() bool { return sink.Closed() || len(sink.Chunks()) >= step })
				if sink.Closed() {
					break
				}
				h.tick()
			}
			// A closed sink reports nothing back to the reader.
			if err := h.Send(createMsg); err != nil {
				t.Errorf("response.create after the session closed: %v", err)
			}
			if err := goleak.Find(); err != nil {
				t.Fatalf("the speaker kept running after ErrSessionClosed: %v", err)
			}
		})
	}
}

// TestCloseStopsSpeaker: Close during a long response returns at once, the
// speaker is gone and nothing more is sent, however far the clock moves.
// The session's context alone stops the speaker too.
func TestCloseStopsSpeaker(t *testing.T) {
	for _, viaContext := range []bool{false, true} {
		t.Run(fmt.Sprintf("context cancelled first: %v", viaContext), func(t *testing.T) {
			h := open(t, defaultInfo(), backendtest.NewSink())
			h.MustSend(appendMsg(randomPCM(11, 50*960)))
			h.MustSend(commitMsg)
			h.Sink.WaitChunks(t, 1)
			h.tick()
			h.Sink.WaitChunks(t, 2)

			if viaContext {
				// The session's context ending is enough to stop the
				// speaker; Close then only waits.
				h.cancelContext()
				if err := goleak.Find(); err != nil {
					t.Fatalf("the speaker outlived its context: %v", err)
				}
			}
			closed := make(chan struct{})
			go func() {
				defer close(closed)
				h.CloseOnly() // the context, if live, is cancelled only after Close
			}()
			select {
			case <-closed:
			case <-time.After(backendtest.WaitTimeout):
				t.Fatal("Close did not return")
			}
			if err := goleak.Find(); err != nil {
				t.Fatalf("goroutines left after Close: %v", err)
			}
			before := len(h.Sink.Chunks())
			h.clk.Step(time.Second)
			if after := len(h.Sink.Chunks()); after != before {
				t.Errorf("%d chunks sent after Close", after-before)
			}
			if got := h.Sink.Types(); got[len(got)-1] == protocol.TypeResponseDone {
				t.Errorf("events = %v: a closed session got response.done", got)
			}
		})
	}
}

// TestBufferedAudioBoundAndAccount: the session's --max-buffered-audio
// bounds the input, and every byte of audio the echo holds is charged to
// the session's memory account while it holds it: the input as it grows,
// a committed item until it has been played and replaced as the last one,
// nothing after clear, cancel or Close.
func TestBufferedAudioBoundAndAccount(t *testing.T) {
	budget := memory.NewBudget(1<<30, metrics.New())
	acct, _ := budget.Open()
	defer acct.Close()
	info := defaultInfo()
	info.Memory = acct
	info.MaxBufferedBytes = int64(info.SampleRate * 2 * 2) // 2 s
	h := open(t, info, backendtest.NewSink())
	h.manual()
	audio := func() int64 { return acct.Held(memory.Audio) }

	second := info.SampleRate * 2
	if err := h.SendBinary(make([]byte, 2*second)); err != nil {
		t.Fatalf("2 s refused with a 2 s bound: %v", err)
	}
	wantBufferFull(t, h.SendBinary([]byte{1, 2}))
	if got := audio(); got < int64(2*second) || got > int64(2*second)+16<<10 {
		t.Fatalf("2 s buffered, %d bytes charged", got)
	}
	h.MustSend(clearMsg)
	if got := audio(); got != 0 {
		t.Fatalf("%d bytes charged after clear", got)
	}

	// A 40 ms turn: charged while it plays, and afterwards as the last item.
	h.MustSend(appendMsg(randomPCM(3, 2*chunkBytes(info.SampleRate))))
	turn := audio()
	h.turn()
	if got := audio(); got != turn {
		t.Fatalf("commit changed the charge from %d to %d: the item should take the buffer over", turn, got)
	}
	h.play(0, 2, 1)
	if got := audio(); got != turn {
		t.Fatalf("%d bytes charged after the turn played, want %d for the last item", got, turn)
	}
	// A replay queued, then cancelled, keeps only the last item.
	h.MustSend(createMsg)
	h.Sink.WaitChunks(t, 3)
	h.MustSend(createMsg)
	h.MustSend(cancelMsg)
	h.tick()
	h.Sink.WaitType(t, protocol.TypeResponseDone, 2)
	if got := audio(); got != turn {
		t.Fatalf("%d bytes charged after a cancel, want %d", got, turn)
	}
	// A second turn replaces the last item, whose bytes go back.
	h.MustSend(appendMsg(randomPCM(4, chunkBytes(info.SampleRate))))
	h.turn()
	h.play(3, 1, 3)
	if got := audio(); got >= 2*turn || got == 0 {
		t.Fatalf("%d bytes charged after the second turn, want only its own", got)
	}
	h.MustSend(appendMsg(randomPCM(5, chunkBytes(info.SampleRate))))
	h.Close()
	if got := audio(); got != 0 {
		t.Fatalf("%d bytes charged after Close", got)
	}
}

// TestLateTurnCatchesUp: the echo plays to a schedule, as a speaker would.
// A turn queued behind another starts where that one ends, even when the
// machine was too busy to start it then: what is overdue goes out at once
// and the turn is back on time, instead of every later turn inheriting the
// delay (a caller who talks in real time heard each busy moment in every
// echo after it).
func TestLateTurnCatchesUp(t *testing.T) {
	h := open(t, defaultInfo(), backendtest.NewSink())
	h.manual()
	chunk := chunkBytes(24000)
	first, second := randomPCM(1, 10*chunk), randomPCM(2, 10*chunk)
	h.MustSend(appendMsg(first))
	h.turn()
	h.Sink.WaitChunks(t, 1)
	h.MustSend(appendMsg(second))
	h.turn() // queued behind the first, due when it ends (200 ms)

	// The speaker stalls: the clock is 100 ms past the first turn's end
	// before the speaker runs again.
	testkit.Eventually(t, backendtest.WaitTimeout, testkit.That("the speaker's ticker", h.clk.HasWaiters))
	h.clk.Step(300 * time.Millisecond)
	h.Sink.WaitType(t, protocol.TypeResponseDone, 1)
	// The second turn's first 100 ms are overdue: 5 chunks and the one due
	// now, at once.
	h.Sink.WaitChunks(t, 10+6)
	time.Sleep(10 * time.Millisecond)
	if n := len(h.Sink.Chunks()); n != 16 {
		t.Fatalf("%d chunks sent, want 16: the late turn sends what is overdue and no more", n)
	}
	h.play(15, 5, 2)
	var got []byte
	for _, c := range h.Sink.Chunks()[10:] {
		got = append(got, c.PCM...)
	}
	if !bytes.Equal(got, second) {
		t.Error("the second turn's echo differs from its input")
	}
}
