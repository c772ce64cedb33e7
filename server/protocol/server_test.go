package protocol

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

func decodeMap(t testing.TB, data []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("not valid JSON: %v\n%s", err, data)
	}
	return m
}

func TestEventID(t *testing.T) {
	for seq, want := range map[uint64]string{
		0: "event_0", 1: "event_1", 1234567: "event_1234567",
		math.MaxUint64: "event_18446744073709551615",
	} {
		if got := EventID(seq); got != want {
			t.Errorf("EventID(%d) = %q, want %q", seq, got, want)
		}
	}
}

func TestMarshalStampsEventID(t *testing.T) {
	ref := ContentRef{ResponseID: "resp_1", ItemID: "item_1", OutputIndex: 0, ContentIndex: 0}
	tests := []struct {
		name string
		ev   Event
		want map[string]any // fields other than event_id
	}{
		{
			name: "input_audio_buffer.cleared",
			ev:   &AudioCleared{EventHeader: EventHeader{Type: TypeInputAudioCleared}},
			want: map[string]any{"type": TypeInputAudioCleared},
		},
		{
			name: "first input_audio_buffer.committed",
			ev:   &AudioCommitted{EventHeader: EventHeader{Type: TypeInputAudioCommitted}, ItemID: "item_1"},
			want: map[string]any{"type": TypeInputAudioCommitted, "previous_item_id": nil, "item_id": "item_1"},
		},
		{
			name: "response.done",
			ev:   &ResponseEvent{EventHeader: EventHeader{Type: TypeResponseDone}, Response: NewResponse("resp_1", ResponseStatusCancelled)},
			want: map[string]any{"type": TypeResponseDone, "response": map[string]any{
				"object": "realtime.response", "id": "resp_1", "status": "cancelled",
				"output_modalities": []any{"audio"}, "output": []any{},
			}},
		},
		{
			name: "response.output_audio_transcript.done",
			ev:   &TranscriptDone{EventHeader: EventHeader{Type: TypeOutputTranscriptDone}, ContentRef: ref, Transcript: "hi"},
			want: map[string]any{"type": TypeOutputTranscriptDone, "response_id": "resp_1", "item_id": "item_1",
				"output_index": 0.0, "content_index": 0.0, "transcript": "hi"},
		},
		{
			name: "gateway.draining",
			ev: &DrainingEvent{EventHeader: EventHeader{Type: TypeGatewayDraining}, ReconnectAfterMS: 1500,
				Deadline: time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)},
			want: map[string]any{"type": TypeGatewayDraining, "reconnect_after_ms": 1500.0, "deadline": "2025-03-14T09:26:53Z"},
		},
		{
			name: "session.created with gateway info",
			ev: &SessionEvent{EventHeader: EventHeader{Type: TypeSessionCreated}, Session: map[string]any{"id": "sess_1"},
				Gateway: &GatewayInfo{SessionID: "sess_1", AudioTransport: AudioTransportBinary, SampleRate: 24000, MaxMessageSize: 1 << 20}},
			want: map[string]any{"type": TypeSessionCreated, "session": map[string]any{"id": "sess_1"}, "gateway": map[string]any{
				"session_id": "sess_1", "audio_transport": "binary", "sample_rate": 24000.0, "max_message_bytes": float64(1 << 20),
			}},
		},
		{
			name: "session.updated omits gateway info",
			ev:   &SessionEvent{EventHeader: EventHeader{Type: TypeSessionUpdated}, Session: map[string]any{}},
			want: map[string]any{"type": TypeSessionUpdated, "session": map[string]any{}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := Marshal(tt.ev, EventID(7))
			if err != nil {
				t.Fatal(err)
			}
			got := decodeMap(t, data)
			if got["event_id"] != "event_7" {
				t.Errorf("event_id = %v, want event_7", got["event_id"])
			}
			delete(got, "event_id")
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("encoded\n%s\nwant fields %v", data, tt.want)
			}
			// A second stamp replaces the first.
			data, err = Marshal(tt.ev, EventID(8))
			if err != nil {
				t.Fatal(err)
			}
			if got := decodeMap(t, data)["event_id"]; got != "event_8" {
				t.Errorf("restamped event_id = %v, want event_8", got)
			}
		})
	}
}

func TestNewErrorEvent(t *testing.T) {
	tests := []struct {
		name      string
		err       *Error
		sessionID string
		want      map[string]any // the error object
	}{
		{
			name:      "invalid event with param and event id",
			err:       &Error{Code: CodeInvalidEvent, Type: ErrorTypeInvalidRequest, Message: "bad audio", Param: "audio", EventID: "evt_9"},
			sessionID: "sess_1",
			want: map[string]any{"type": "invalid_request_error", "code": "invalid_event", "message": "bad audio",
				"param": "audio", "event_id": "evt_9", "session_id": "sess_1"},
		},
		{
			name:      "invalid event from Invalid without param",
			err:       Invalid("", "input audio buffer is empty"),
			sessionID: "sess_2",
			want: map[string]any{"type": "invalid_request_error", "code": "invalid_event", "message": "input audio buffer is empty",
				"param": nil, "event_id": nil, "session_id": "sess_2"},
		},
		{
			name:      "fatal server error",
			err:       Fatal(CodeBackendUnavailable, CloseInternalError, "backend is down"),
			sessionID: "sess_3",
			want: map[string]any{"type": "server_error", "code": "backend_unavailable", "message": "backend is down",
				"param": nil, "event_id": nil, "session_id": "sess_3"},
		},
		{
			name: "missing type defaults to invalid_request_error; no session id",
			err:  &Error{Code: CodeSlowConsumer},
			want: map[string]any{"type": "invalid_request_error", "code": "slow_consumer", "message": "",
				"param": nil, "event_id": nil},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := NewErrorEvent(tt.err, tt.sessionID)
			data, err := Marshal(ev, EventID(3))
			if err != nil {
				t.Fatal(err)
			}
			got := decodeMap(t, data)
			want := map[string]any{"type": "error", "event_id": "event_3", "error": tt.want}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("encoded\n%s\nwant %v", data, want)
			}
			// param and event_id are present as null, not omitted, as in
			// the OpenAI error shape.
			for _, key := range []string{`"param":`, `"event_id":`} {
				if strings.Count(string(data), key) < 1 {
					t.Errorf("%s missing from %s", key, data)
				}
			}
		})
	}
	// The event keeps no reference to the caller's Error.
	e := Invalid("audio", "m")
	ev := NewErrorEvent(e, "")
	e.Param = "changed"
	if *ev.Error.Param != "audio" {
		t.Error("NewErrorEvent aliases the Error's fields")
	}
}

// audioDelta is the struct form of response.output_audio.delta that
// AppendAudioDelta writes by hand.
type audioDelta struct {
	EventHeader
	ContentRef
	Delta []byte `json:"delta"` // encoding/json writes []byte as standard base64
}

func structDelta(t testing.TB, seq uint64, ref ContentRef, pcm []byte) map[string]any {
	t.Helper()
	data, err := Marshal(&audioDelta{EventHeader: EventHeader{Type: TypeOutputAudioDelta}, ContentRef: ref, Delta: pcm}, EventID(seq))
	if err != nil {
		t.Fatal(err)
	}
	return decodeMap(t, data)
}

// checkAudioDelta asserts everything AppendAudioDelta promises for one input.
func checkAudioDelta(t testing.TB, seq uint64, ref ContentRef, pcm []byte) {
	t.Helper()
	prefix := []byte("prefix")
	out := AppendAudioDelta(append([]byte(nil), prefix...), seq, ref, pcm)
	if !bytes.HasPrefix(out, prefix) {
		t.Fatalf("AppendAudioDelta overwrote dst")
	}
	out = out[len(prefix):]
	if !json.Valid(out) {
		t.Fatalf("invalid JSON for ref %+v: %q", ref, out)
	}
	got := decodeMap(t, out)
	if want := structDelta(t, seq, ref, pcm); !reflect.DeepEqual(got, want) {
		t.Fatalf("AppendAudioDelta\n%s\ndiffers from the struct form %v", out, want)
	}
	b64, _ := got["delta"].(string)
	dec, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || !bytes.Equal(dec, pcm) {
		t.Fatalf("delta does not round-trip: %v", err)
	}
	if size := AudioDeltaSize(ref, len(pcm)); len(out) > size {
		t.Fatalf("output is %d bytes, AudioDeltaSize says at most %d (ref %+v, %d bytes of audio)", len(out), size, ref, len(pcm))
	}
}

func TestAppendAudioDeltaRandomSizes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 500 {
		n := rng.IntN(8 << 10)
		if i < 4 {
			n = []int{0, 2, 640, 960}[i]
		}
		pcm := make([]byte, n)
		for j := range pcm {
			pcm[j] = byte(rng.Uint32())
		}
		ref := ContentRef{
			ResponseID:   "resp_" + strings.Repeat("x", rng.IntN(40)),
			ItemID:       "item_" + strings.Repeat("y", rng.IntN(40)),
			OutputIndex:  rng.IntN(4),
			ContentIndex: rng.IntN(4),
		}
		checkAudioDelta(t, rng.Uint64N(1<<40), ref, pcm)
	}
}

func TestAppendAudioDeltaExtremes(t *testing.T) {
	pcm := pcmFrame(960)
	tests := []struct {
		name string
		seq  uint64
		ref  ContentRef
	}{
		{name: "typical", seq: 42, ref: ContentRef{ResponseID: "resp_1", ItemID: "item_1_echo"}},
		{name: "empty ids", seq: 0, ref: ContentRef{}},
		{name: "largest numbers", seq: math.MaxUint64,
			ref: ContentRef{ResponseID: "r", ItemID: "i", OutputIndex: math.MinInt64, ContentIndex: math.MinInt64}},
		{name: "quotes and backslashes", seq: 1, ref: ContentRef{ResponseID: `a"b\c`, ItemID: `\"\"`}},
		{name: "control characters", seq: 1, ref: ContentRef{ResponseID: "\x00\x01\a\b\t\n\v\f\r\x1b\x7f", ItemID: strings.Repeat("\x01", 30)}},
		{name: "non-ASCII", seq: 1, ref: ContentRef{ResponseID: "résumé-日本-🎙", ItemID: "\u2028\u2029\u0085\ufeff"}},
		{name: "HTML characters", seq: 1, ref: ContentRef{ResponseID: "<script>&</script>", ItemID: "a>b"}},
		{name: "invalid UTF-8", seq: 1, ref: ContentRef{ResponseID: "\xff\xfe\xc3", ItemID: strings.Repeat("\x80", 30)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkAudioDelta(t, tt.seq, tt.ref, pcm)
		})
	}
}

func TestAppendAudioDeltaDoesNotAllocate(t *testing.T) {
	ref := ContentRef{ResponseID: "resp_12", ItemID: "item_12_echo"}
	pcm := pcmFrame(960)
	buf := make([]byte, 0, AudioDeltaSize(ref, len(pcm)))
	seq := uint64(0)
	allocs := testing.AllocsPerRun(100, func() {
		seq++
		buf = AppendAudioDelta(buf[:0], seq, ref, pcm)
	})
	if allocs != 0 {
		t.Errorf("AppendAudioDelta allocates %.1f times per call into a buffer sized by AudioDeltaSize", allocs)
	}
}
