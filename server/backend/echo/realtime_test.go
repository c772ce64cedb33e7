package echo_test

import (
	"encoding/base64"
	"reflect"
	"testing"

	"github.com/voicegateway/voicegateway/server/backend"
	"github.com/voicegateway/voicegateway/server/backend/backendtest"
	"github.com/voicegateway/voicegateway/server/backend/echo"
	"github.com/voicegateway/voicegateway/server/protocol"
	"github.com/voicegateway/voicegateway/server/resume"
)

// tone is d10 10 ms frames of a loud square wave (speech to the detector).
func tone(rate, frames int) []byte {
	b := make([]byte, 2*rate/100*frames)
	for i := 0; i+1 < len(b); i += 2 {
		v := int16(8000)
		if (i/2/20)%2 == 0 {
			v = -8000
		}
		b[i], b[i+1] = byte(v), byte(uint16(v)>>8)
	}
	return b
}

// silence is frames 10 ms frames of digital silence.
func silence(rate, frames int) []byte { return make([]byte, 2*rate/100*frames) }

// TestServerVADTurn: speech then silence_duration_ms of quiet is one turn:
// speech_started, speech_stopped, the commit with its item, and a response
// echoing the speech with prefix_padding_ms of the quiet before it.
func TestServerVADTurn(t *testing.T) {
	h := open(t, defaultInfo(), backendtest.NewSink())
	rate := h.Info.SampleRate
	h.MustSend(`{"type":"session.update","session":{"audio":{"input":{"turn_detection":{"type":"server_vad","silence_duration_ms":200,"prefix_padding_ms":100}}}}}`)
	h.Sink.WaitType(t, protocol.TypeSessionUpdated, 1)
	h.MustSend(appendMsg(silence(rate, 50))) // 500 ms quiet: only 100 ms kept
	h.MustSend(appendMsg(tone(rate, 30)))    // 300 ms speech
	h.MustSend(appendMsg(silence(rate, 10))) // 100 ms quiet: not yet a stop
	if n := h.Sink.Count(protocol.TypeSpeechStopped); n != 0 {
		t.Fatalf("speech stopped after 100 ms of quiet, want 200")
	}
	h.MustSend(appendMsg(silence(rate, 15))) // 150 ms more: the stop, 50 ms left over
	started := h.Sink.WaitType(t, protocol.TypeSpeechStarted, 1).Object
	stopped := h.Sink.WaitType(t, protocol.TypeSpeechStopped, 1).Object
	if started["audio_start_ms"] != 400.0 || started["item_id"] != "item_1" {
		t.Errorf("speech_started = %v, want audio_start_ms 400 (500 - 100 padding), item_1", started)
	}
	if stopped["audio_end_ms"] != 1000.0 || stopped["item_id"] != "item_1" {
		t.Errorf("speech_stopped = %v, want audio_end_ms 1000", stopped)
	}
	committed := h.Sink.WaitType(t, protocol.TypeInputAudioCommitted, 1).Object
	if committed["item_id"] != "item_1" {
		t.Errorf("committed = %v", committed)
	}
	// 100 ms padding + 300 ms speech + 200 ms quiet = 600 ms: 30 chunks.
	done := h.play(0, 30, 1)
	if resp := done["response"].(map[string]any); resp["status"] != "completed" || len(resp["output"].([]any)) != 1 {
		t.Errorf("response.done = %v, want a completed response with its item", done)
	}
	want := []string{
		protocol.TypeSessionCreated, protocol.TypeSessionUpdated, protocol.TypeSpeechStarted, protocol.TypeSpeechStopped,
		protocol.TypeInputAudioCommitted, protocol.TypeItemAdded, protocol.TypeItemDone,
		protocol.TypeResponseCreated, protocol.TypeOutputItemAdded, protocol.TypeItemAdded, protocol.TypeContentPartAdded,
		protocol.TypeOutputAudioDone, protocol.TypeOutputTranscriptDelta, protocol.TypeOutputTranscriptDone,
		protocol.TypeContentPartDone, protocol.TypeOutputItemDone, protocol.TypeItemDone, protocol.TypeResponseDone,
	}
	if got := h.Sink.Types(); !reflect.DeepEqual(got, want) {
		t.Errorf("events =\n%v\nwant\n%v", got, want)
	}
	if tdone := h.Sink.WaitType(t, protocol.TypeOutputTranscriptDone, 1).Object; tdone["transcript"] != "(echo of 0.60 s of audio)" {
		t.Errorf("transcript %q", tdone["transcript"])
	}
}

// TestVADWithoutResponse: create_response false commits and answers
// nothing; the client asks.
func TestVADWithoutResponse(t *testing.T) {
	h := open(t, defaultInfo(), backendtest.NewSink())
	rate := h.Info.SampleRate
	h.MustSend(`{"type":"session.update","session":{"turn_detection":{"type":"server_vad","create_response":false}}}`)
	h.MustSend(appendMsg(append(tone(rate, 10), silence(rate, 60)...)))
	h.Sink.WaitType(t, protocol.TypeInputAudioCommitted, 1)
	if n := h.Sink.Count(protocol.TypeResponseCreated); n != 0 {
		t.Fatalf("%d responses without create_response", n)
	}
}

// TestManualTurnsAnswerOnce: with turn detection off a commit only
// commits, and response.create answers it once.
func TestManualTurnsAnswerOnce(t *testing.T) {
	h := open(t, defaultInfo(), backendtest.NewSink())
	h.manual()
	h.MustSend(appendMsg(tone(h.Info.SampleRate, 2)))
	h.MustSend(commitMsg)
	h.Sink.WaitType(t, protocol.TypeItemDone, 1)
	if n := h.Sink.Count(protocol.TypeSpeechStarted) + h.Sink.Count(protocol.TypeResponseCreated); n != 0 {
		t.Fatalf("events %v: turn detection off, want no speech events and no response", h.Sink.Types())
	}
	h.MustSend(createMsg)
	h.play(0, 1, 1)
	if n := h.Sink.Count(protocol.TypeResponseCreated); n != 1 {
		t.Errorf("%d responses, want 1", n)
	}
}

// TestCancelAnsweredAsOpenAI: a cancel with nothing playing is OpenAI's
// response_cancel_not_active error; one mid-response ends it cancelled
// with its item incomplete.
func TestCancelAnsweredAsOpenAI(t *testing.T) {
	h := open(t, defaultInfo(), backendtest.NewSink())
	h.manual()
	err := h.Send(cancelMsg)
	if err == nil || err.Fatal || err.Code != protocol.CodeResponseCancelNotActive {
		t.Fatalf("idle cancel: %+v, want non-fatal response_cancel_not_active", err)
	}
	h.MustSend(appendMsg(tone(h.Info.SampleRate, 20)))
	h.turn()
	h.Sink.WaitChunks(t, 1)
	h.MustSend(cancelMsg)
	h.tick()
	done := h.Sink.WaitType(t, protocol.TypeResponseDone, 1).Object
	resp := done["response"].(map[string]any)
	item := resp["output"].([]any)[0].(map[string]any)
	if resp["status"] != "cancelled" || item["status"] != "incomplete" {
		t.Errorf("response.done = %v, want cancelled with an incomplete item", done)
	}
}

// TestItemCreate: conversation.item.create is added and done; a user text
// item is what the next response says, and an audio item what it plays;
// retrieve and delete find the item.
func TestItemCreate(t *testing.T) {
	h := open(t, defaultInfo(), backendtest.NewSink())
	h.manual()
	h.MustSend(`{"type":"conversation.item.create","item":{"type":"message","role":"user","content":[{"type":"input_text","text":"hello there"}]}}`)
	added := h.Sink.WaitType(t, protocol.TypeItemAdded, 1).Object
	h.Sink.WaitType(t, protocol.TypeItemDone, 1)
	item := added["item"].(map[string]any)
	if item["role"] != "user" || item["status"] != "completed" || item["id"] == "" {
		t.Errorf("conversation.item.added = %v", added)
	}
	h.MustSend(createMsg)
	if tdone := h.Sink.WaitType(t, protocol.TypeOutputTranscriptDone, 1).Object; tdone["transcript"] != "hello there" {
		t.Errorf("response to a text item says %q", tdone["transcript"])
	}
	h.Sink.WaitType(t, protocol.TypeResponseDone, 1)

	pcm := tone(h.Info.SampleRate, 2)
	h.MustSend(`{"type":"conversation.item.create","previous_item_id":"` + item["id"].(string) + `","item":{"id":"my_item","type":"message","role":"user","content":[{"type":"input_audio","audio":"` + base64.StdEncoding.EncodeToString(pcm) + `"}]}}`)
	h.Sink.WaitType(t, protocol.TypeItemDone, 3)
	h.MustSend(createMsg)
	h.play(0, 1, 2)
	if got := h.Sink.Chunks(); len(got) != 1 || !reflect.DeepEqual(got[0].PCM, pcm) {
		t.Errorf("response to an audio item played %d chunks", len(got))
	}

	h.MustSend(`{"type":"conversation.item.retrieve","item_id":"my_item"}`)
	if r := h.Sink.WaitType(t, protocol.TypeItemRetrieved, 1).Object; r["item"].(map[string]any)["id"] != "my_item" {
		t.Errorf("retrieved %v", r)
	}
	h.MustSend(`{"type":"conversation.item.delete","item_id":"my_item"}`)
	if d := h.Sink.WaitType(t, protocol.TypeItemDeleted, 1).Object; d["item_id"] != "my_item" {
		t.Errorf("deleted %v", d)
	}
	wantInvalid(t, h.Send(`{"type":"conversation.item.retrieve","item_id":"my_item"}`), "item_id")
	for msg, param := range map[string]string{
		`{"type":"conversation.item.create"}`:                                                                      "item",
		`{"type":"conversation.item.create","item":{"type":"function_call"}}`:                                      "item.type",
		`{"type":"conversation.item.create","item":{"type":"message","role":"robot"}}`:                             "item.role",
		`{"type":"conversation.item.create","previous_item_id":"nope","item":{"type":"message","role":"user"}}`:    "previous_item_id",
		`{"type":"conversation.item.create","item":{"type":"message","role":"user","content":[{"type":"video"}]}}`: "item.content[0].type",
		`{"type":"conversation.item.create","item":{"id":"a b","type":"message","role":"user"}}`:                   "item.id",
	} {
		wantInvalid(t, h.Send(msg), param)
	}
}

// TestTurnDetectionRefusals: settings outside their bounds are refused by
// name and change nothing.
func TestTurnDetectionRefusals(t *testing.T) {
	h := open(t, defaultInfo(), backendtest.NewSink())
	for msg, param := range map[string]string{
		`{"type":"session.update","session":{"audio":{"input":{"turn_detection":{"threshold":1.5}}}}}`:          "session.audio.input.turn_detection.threshold",
		`{"type":"session.update","session":{"audio":{"input":{"turn_detection":{"silence_duration_ms":0}}}}}`:  "session.audio.input.turn_detection.silence_duration_ms",
		`{"type":"session.update","session":{"audio":{"input":{"turn_detection":{"prefix_padding_ms":9999}}}}}`: "session.audio.input.turn_detection.prefix_padding_ms",
		`{"type":"session.update","session":{"audio":{"input":{"turn_detection":{"type":"push_to_talk"}}}}}`:    "session.audio.input.turn_detection.type",
		`{"type":"session.update","session":{"audio":{"input":{"turn_detection":"server_vad"}}}}`:               "session.audio.input.turn_detection",
		`{"type":"session.update","session":{"turn_detection":{"create_response":"yes"}}}`:                      "session.turn_detection",
	} {
		wantInvalid(t, h.Send(msg), param)
	}
	if n := h.Sink.Count(protocol.TypeSessionUpdated); n != 0 {
		t.Errorf("%d session.updated for refused updates", n)
	}
}

// TestResumeContinuesTheCounters: a session resumed from another server
// keeps counting its items and responses where the old one stopped, and
// says it resumed right after session.created.
func TestResumeContinuesTheCounters(t *testing.T) {
	info := defaultInfo()
	info.Resume = &resume.State{SessionID: info.SessionID, Backend: echo.Name, Turns: 3, UserItems: 3}
	h := open(t, info, backendtest.NewSink())
	h.manual()
	if got := h.Sink.Types()[:2]; !reflect.DeepEqual(got, []string{protocol.TypeSessionCreated, protocol.TypeGatewayResumed}) {
		t.Fatalf("first events %v", got)
	}
	h.MustSend(`{"type":"input_audio_buffer.append","audio":"AAAAAAAAAAA="}`)
	h.turn()
	if done := h.play(0, 1, 1); done["response"].(map[string]any)["id"] != "resp_4" {
		t.Errorf("the first response after the move is %v, want resp_4", done["response"].(map[string]any)["id"])
	}
	if st := h.Conn.(backend.Resumer).ResumeState(); st.Turns != 4 || st.UserItems != 4 {
		t.Errorf("ResumeState = %+v, want 4 turns and 4 user items", st)
	}
}
