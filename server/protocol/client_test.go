package protocol

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/coder/websocket"
)

// pcmFrame returns n bytes of deterministic, non-silent PCM16 LE audio.
func pcmFrame(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

func appendJSON(pcm []byte) string {
	return `{"type":"input_audio_buffer.append","event_id":"evt_1","audio":"` + base64.StdEncoding.EncodeToString(pcm) + `"}`
}

func TestDecodeTextAccepts(t *testing.T) {
	frame := pcmFrame(960)
	// 0xff bytes encode to "////", so the escaped form "\/\/\/\/" exercises
	// the slow path of jsonStringBytes.
	slashes := bytes.Repeat([]byte{0xff}, 6)
	escapedSlashes := strings.ReplaceAll(base64.StdEncoding.EncodeToString(slashes), "/", `\/`)

	tests := []struct {
		name           string
		in             string
		wantType       string
		wantEventID    string
		wantKnown      bool
		wantAudio      []byte // compared when wantType is an append
		wantSession    string
		wantResponse   string
		wantResponseID string
	}{
		{
			name:        "session.update",
			in:          `{"type":"session.update","event_id":"evt_s","session":{"instructions":"be brief","audio":{"input":{"format":{"type":"audio/pcm","rate":24000}}}}}`,
			wantType:    TypeSessionUpdate,
			wantEventID: "evt_s",
			wantKnown:   true,
			wantSession: `{"instructions":"be brief","audio":{"input":{"format":{"type":"audio/pcm","rate":24000}}}}`,
		},
		{
			name:        "session.update with an empty object",
			in:          `{"type":"session.update","session":{}}`,
			wantType:    TypeSessionUpdate,
			wantKnown:   true,
			wantSession: `{}`,
		},
		{
			name:        "session.update with whitespace before the object",
			in:          "{\"type\":\"session.update\",\"session\": \n {\"instructions\":\"x\"}}",
			wantType:    TypeSessionUpdate,
			wantKnown:   true,
			wantSession: `{"instructions":"x"}`,
		},
		{
			name:        "append with a 20 ms 24 kHz frame",
			in:          appendJSON(frame),
			wantType:    TypeInputAudioAppend,
			wantEventID: "evt_1",
			wantKnown:   true,
			wantAudio:   frame,
		},
		{
			name:        "append with one sample",
			in:          appendJSON([]byte{1, 2}),
			wantType:    TypeInputAudioAppend,
			wantKnown:   true,
			wantAudio:   []byte{1, 2},
			wantEventID: "evt_1",
		},
		{
			name:      "append with empty audio",
			in:        `{"type":"input_audio_buffer.append","audio":""}`,
			wantType:  TypeInputAudioAppend,
			wantKnown: true,
			wantAudio: []byte{},
		},
		{
			name:      "append with escaped slashes in base64",
			in:        `{"type":"input_audio_buffer.append","audio":"` + escapedSlashes + `"}`,
			wantType:  TypeInputAudioAppend,
			wantKnown: true,
			wantAudio: slashes,
		},
		{
			name:      "append ignoring unknown fields",
			in:        `{"type":"input_audio_buffer.append","audio":"AQI=","extra":[1,2,{"a":null}]}`,
			wantType:  TypeInputAudioAppend,
			wantKnown: true,
			wantAudio: []byte{1, 2},
		},
		{
			name:        "commit",
			in:          `{"type":"input_audio_buffer.commit","event_id":"evt_c"}`,
			wantType:    TypeInputAudioCommit,
			wantEventID: "evt_c",
			wantKnown:   true,
		},
		{
			name:      "clear",
			in:        `{"type":"input_audio_buffer.clear"}`,
			wantType:  TypeInputAudioClear,
			wantKnown: true,
		},
		{
			name:      "response.create without a response",
			in:        `{"type":"response.create"}`,
			wantType:  TypeResponseCreate,
			wantKnown: true,
		},
		{
			name:         "response.create with a null response",
			in:           `{"type":"response.create","response":null}`,
			wantType:     TypeResponseCreate,
			wantKnown:    true,
			wantResponse: `null`,
		},
		{
			name:         "response.create with a response object",
			in:           `{"type":"response.create","response":{"instructions":"say hi","output_modalities":["audio"]}}`,
			wantType:     TypeResponseCreate,
			wantKnown:    true,
			wantResponse: `{"instructions":"say hi","output_modalities":["audio"]}`,
		},
		{
			name:      "response.cancel without a response_id",
			in:        `{"type":"response.cancel"}`,
			wantType:  TypeResponseCancel,
			wantKnown: true,
		},
		{
			name:           "response.cancel with a response_id",
			in:             `{"type":"response.cancel","response_id":"resp_42"}`,
			wantType:       TypeResponseCancel,
			wantKnown:      true,
			wantResponseID: "resp_42",
		},
		{
			name:           "response.cancel with a 128-byte response_id",
			in:             `{"type":"response.cancel","response_id":"` + strings.Repeat("r", 128) + `"}`,
			wantType:       TypeResponseCancel,
			wantKnown:      true,
			wantResponseID: strings.Repeat("r", 128),
		},
		{
			name:     "unknown type decodes for relays",
			in:       `{"type":"conversation.item.create","event_id":"evt_u","item":{"type":"message"}}`,
			wantType: "conversation.item.create", wantEventID: "evt_u",
		},
		{
			name:     "unknown type of 128 bytes",
			in:       `{"type":"` + strings.Repeat("t", 128) + `"}`,
			wantType: strings.Repeat("t", 128),
		},
		{
			name:        "event_id of 128 bytes",
			in:          `{"type":"input_audio_buffer.clear","event_id":"` + strings.Repeat("e", 128) + `"}`,
			wantType:    TypeInputAudioClear,
			wantEventID: strings.Repeat("e", 128),
			wantKnown:   true,
		},
		{
			name:      "leading whitespace",
			in:        " \t\r\n{\"type\":\"input_audio_buffer.commit\"}",
			wantType:  TypeInputAudioCommit,
			wantKnown: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d Decoder
			in := []byte(tt.in)
			ev, err := d.DecodeText(in)
			if err != nil {
				t.Fatalf("DecodeText: unexpected error %v (param %q)", err, err.Param)
			}
			if ev.Type != tt.wantType {
				t.Errorf("Type = %q, want %q", ev.Type, tt.wantType)
			}
			if ev.EventID != tt.wantEventID {
				t.Errorf("EventID = %q, want %q", ev.EventID, tt.wantEventID)
			}
			if got := ev.Known(); got != tt.wantKnown {
				t.Errorf("Known() = %v, want %v", got, tt.wantKnown)
			}
			if ev.Binary {
				t.Error("Binary set on a text event")
			}
			if !bytes.Equal(ev.Raw, in) {
				t.Errorf("Raw = %q, want the input", ev.Raw)
			}
			if tt.wantType == TypeInputAudioAppend {
				if !bytes.Equal(ev.Audio, tt.wantAudio) {
					t.Errorf("Audio = %x, want %x", ev.Audio, tt.wantAudio)
				}
			} else if ev.Audio != nil {
				t.Errorf("Audio = %x on a %s event", ev.Audio, ev.Type)
			}
			if string(ev.Session) != tt.wantSession {
				t.Errorf("Session = %s, want %s", ev.Session, tt.wantSession)
			}
			if string(ev.Response) != tt.wantResponse {
				t.Errorf("Response = %s, want %s", ev.Response, tt.wantResponse)
			}
			if ev.ResponseID != tt.wantResponseID {
				t.Errorf("ResponseID = %q, want %q", ev.ResponseID, tt.wantResponseID)
			}
		})
	}
}

func TestDecodeTextRejects(t *testing.T) {
	long := strings.Repeat("x", 129)
	bigSession := `{"type":"session.update","session":{"instructions":"` + strings.Repeat("a", 64<<10) + `"}}`

	tests := []struct {
		name      string
		in        string
		wantParam string
		// wantType is the Type of the returned event, which a session uses
		// to label the error; empty when the message never got that far.
		wantType string
		// wantInMessage is a fragment the message must carry.
		wantInMessage string
	}{
		{name: "not UTF-8", in: "{\"type\":\"session.update\",\"x\":\"\xff\xfe\"}", wantInMessage: "UTF-8"},
		{name: "empty message", in: "", wantInMessage: "JSON object"},
		{name: "only whitespace", in: " \n\t", wantInMessage: "JSON object"},
		{name: "string", in: `"input_audio_buffer.commit"`, wantInMessage: "JSON object"},
		{name: "number", in: `42`, wantInMessage: "JSON object"},
		{name: "null", in: `null`, wantInMessage: "JSON object"},
		{name: "array", in: `[{"type":"input_audio_buffer.commit"}]`, wantInMessage: "JSON object"},
		{name: "truncated JSON", in: `{"type":"input_audio_buffer.commit"`, wantInMessage: "not a valid JSON"},
		{name: "trailing comma", in: `{"type":"input_audio_buffer.commit",}`, wantInMessage: "syntax error"},
		{name: "trailing data", in: `{"type":"input_audio_buffer.commit"} {}`, wantInMessage: "not a valid JSON"},
		{name: "type is a number", in: `{"type":5}`, wantParam: "type", wantInMessage: "must be a string"},
		{name: "event_id is an object", in: `{"type":"input_audio_buffer.commit","event_id":{}}`, wantParam: "event_id",
			wantType: TypeInputAudioCommit, wantInMessage: "must be a string"},
		{name: "response_id is a number", in: `{"type":"response.cancel","response_id":7}`, wantParam: "response_id",
			wantType: TypeResponseCancel, wantInMessage: "must be a string"},
		{name: "type in another case", in: `{"TYPE":"input_audio_buffer.commit"}`, wantParam: "type", wantInMessage: "case-sensitive"},
		{name: "type given twice", in: `{"type":"response.create","type":"input_audio_buffer.commit"}`, wantParam: "type", wantInMessage: "more than once"},
		{name: "escaped key spelling a duplicate", in: `{"type":"response.create","typ\u0065":"input_audio_buffer.commit"}`, wantParam: "type", wantInMessage: "more than once"},
		{name: "trailing garbage", in: `{"type":"input_audio_buffer.commit"} x`, wantInMessage: "valid JSON"},
		{name: "raw control character in a string", in: "{\"type\":\"input_audio_buffer.commit\",\"x\":\"a\u0001b\"}", wantInMessage: "valid JSON"},
		{name: "missing type", in: `{"event_id":"evt_1"}`, wantParam: "type"},
		{name: "empty type", in: `{"type":""}`, wantParam: "type"},
		{name: "null type", in: `{"type":null}`, wantParam: "type"},
		{name: "type longer than 128 bytes", in: `{"type":"` + long + `"}`, wantParam: "type"},
		{name: "event_id longer than 128 bytes", in: `{"type":"input_audio_buffer.commit","event_id":"` + long + `"}`,
			wantParam: "event_id", wantType: TypeInputAudioCommit},
		{name: "append without audio", in: `{"type":"input_audio_buffer.append"}`,
			wantParam: "audio", wantType: TypeInputAudioAppend},
		{name: "append with null audio", in: `{"type":"input_audio_buffer.append","audio":null}`,
			wantParam: "audio", wantType: TypeInputAudioAppend},
		{name: "append with numeric audio", in: `{"type":"input_audio_buffer.append","audio":1234}`,
			wantParam: "audio", wantType: TypeInputAudioAppend},
		{name: "append with array audio", in: `{"type":"input_audio_buffer.append","audio":["AAAA"]}`,
			wantParam: "audio", wantType: TypeInputAudioAppend},
		{name: "append with bad base64", in: `{"type":"input_audio_buffer.append","audio":"!!!!"}`,
			wantParam: "audio", wantType: TypeInputAudioAppend, wantInMessage: "base64"},
		{name: "append with unpadded base64", in: `{"type":"input_audio_buffer.append","audio":"AQI"}`,
			wantParam: "audio", wantType: TypeInputAudioAppend, wantInMessage: "base64"},
		{name: "append with URL-safe base64", in: `{"type":"input_audio_buffer.append","audio":"__-_"}`,
			wantParam: "audio", wantType: TypeInputAudioAppend, wantInMessage: "base64"},
		{name: "append with bad base64 spelled in unicode escapes", in: `{"type":"input_audio_buffer.append","audio":"\u0041\u0051\u003d"}`,
			wantParam: "audio", wantType: TypeInputAudioAppend, wantInMessage: "base64"},
		{name: "session.update without session", in: `{"type":"session.update"}`,
			wantParam: "session", wantType: TypeSessionUpdate},
		{name: "session.update with null session", in: `{"type":"session.update","session":null}`,
			wantParam: "session", wantType: TypeSessionUpdate},
		{name: "session.update with a string session", in: `{"type":"session.update","session":"{}"}`,
			wantParam: "session", wantType: TypeSessionUpdate},
		{name: "session.update with an array session", in: `{"type":"session.update","session":[{}]}`,
			wantParam: "session", wantType: TypeSessionUpdate},
		{name: "session object over 64 KiB", in: bigSession,
			wantParam: "session", wantType: TypeSessionUpdate, wantInMessage: "64 KiB"},
		{name: "response.create with a string response", in: `{"type":"response.create","response":"now"}`,
			wantParam: "response", wantType: TypeResponseCreate},
		{name: "response.create with an array response", in: `{"type":"response.create","response":[]}`,
			wantParam: "response", wantType: TypeResponseCreate},
		{name: "response.create with a boolean response", in: `{"type":"response.create","response":true}`,
			wantParam: "response", wantType: TypeResponseCreate},
		{name: "response_id longer than 128 bytes", in: `{"type":"response.cancel","response_id":"` + long + `"}`,
			wantParam: "response_id", wantType: TypeResponseCancel},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d Decoder
			ev, err := d.DecodeText([]byte(tt.in))
			if err == nil {
				t.Fatalf("DecodeText accepted %q as %+v", truncate(tt.in), ev)
			}
			if err.Code != CodeInvalidEvent {
				t.Errorf("Code = %q, want %q", err.Code, CodeInvalidEvent)
			}
			if err.Type != ErrorTypeInvalidRequest {
				t.Errorf("Type = %q, want %q", err.Type, ErrorTypeInvalidRequest)
			}
			if err.Param != tt.wantParam {
				t.Errorf("Param = %q, want %q", err.Param, tt.wantParam)
			}
			if err.Fatal {
				t.Error("a rejected event must not end the session")
			}
			if err.Message == "" {
				t.Error("empty Message")
			}
			if !strings.Contains(err.Message, tt.wantInMessage) {
				t.Errorf("Message = %q, want it to mention %q", err.Message, tt.wantInMessage)
			}
			if ev.Type != tt.wantType {
				t.Errorf("event Type = %q, want %q", ev.Type, tt.wantType)
			}
			if len(ev.EventID) > maxEventIDLength {
				t.Errorf("event carries an over-long EventID (%d bytes)", len(ev.EventID))
			}
			if ev.Audio != nil || ev.Session != nil || ev.Response != nil || ev.ResponseID != "" {
				t.Errorf("rejected event carries a payload: %+v", ev)
			}
		})
	}
}

// TestDecodeTextMessagesDoNotEchoInput keeps client data (which may carry a
// key or PII) out of error messages that end up in logs.
func TestDecodeTextMessagesDoNotEchoInput(t *testing.T) {
	const secret = "sk-live-SECRET"
	inputs := []string{
		`{"type":"` + secret + `",`,
		`{"type":"input_audio_buffer.append","audio":"` + secret + `"}`,
		`{"type":5,"` + secret + `":1}`,
		`{"type":"session.update","session":"` + secret + `"}`,
		`["` + secret + `"]`,
	}
	for _, in := range inputs {
		var d Decoder
		_, err := d.DecodeText([]byte(in))
		if err == nil {
			t.Fatalf("DecodeText accepted %q", in)
		}
		if strings.Contains(err.Message, "SECRET") || strings.Contains(err.Error(), "SECRET") {
			t.Errorf("error for %q echoes client data: %q", in, err.Message)
		}
	}
}

// TestDecoderReusesAudioBuffer checks that a smaller frame after a larger one
// is decoded correctly into the reused buffer, and that an earlier event's
// Audio is only valid until the next call, as documented.
func TestDecoderReusesAudioBuffer(t *testing.T) {
	var d Decoder
	big := pcmFrame(1920)
	ev1, err := d.DecodeText([]byte(appendJSON(big)))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ev1.Audio, big) {
		t.Fatal("first frame decoded wrongly")
	}
	small := bytes.Repeat([]byte{0xab, 0xcd}, 100)
	ev2, err := d.DecodeText([]byte(appendJSON(small)))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ev2.Audio, small) {
		t.Fatalf("second frame = %x, want %x", ev2.Audio, small)
	}
	if &ev1.Audio[0] != &ev2.Audio[0] {
		t.Error("the decoder did not reuse its audio buffer")
	}
	// A failed decode must not hand back stale audio.
	ev3, derr := d.DecodeText([]byte(`{"type":"input_audio_buffer.append","audio":"AQ="}`))
	if derr == nil || ev3.Audio != nil {
		t.Fatalf("broken frame: err %v, audio %x", derr, ev3.Audio)
	}
}

func TestDecodeBinary(t *testing.T) {
	tests := []struct {
		name    string
		n       int
		wantErr bool
	}{
		{name: "empty", n: 0},
		{name: "one sample", n: 2},
		{name: "20 ms at 24 kHz", n: 960},
		{name: "20 ms at 16 kHz", n: 640},
		{name: "one byte", n: 1, wantErr: true},
		{name: "half a sample short", n: 959, wantErr: true},
		{name: "half a sample over", n: 961, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d Decoder
			data := pcmFrame(tt.n)
			ev, err := d.DecodeBinary(data)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("DecodeBinary accepted %d bytes", tt.n)
				}
				if err.Code != CodeInvalidEvent || err.Param != "audio" || err.Message == "" || err.Fatal {
					t.Errorf("error = %+v, want a non-fatal invalid_event on audio", err)
				}
				if ev.Type != "" || ev.Audio != nil {
					t.Errorf("rejected event carries %+v", ev)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeBinary: %v", err)
			}
			if ev.Type != TypeInputAudioAppend || !ev.Binary || !ev.Known() || ev.Raw != nil || ev.EventID != "" {
				t.Errorf("event = %+v, want a binary append", ev)
			}
			if !bytes.Equal(ev.Audio, data) {
				t.Error("Audio differs from the message")
			}
			if tt.n > 0 && &ev.Audio[0] != &data[0] {
				t.Error("Audio does not alias the message (an avoidable copy)")
			}
		})
	}
}

func TestErrorConstructors(t *testing.T) {
	inv := Invalid("audio", "bad audio")
	if inv.Code != CodeInvalidEvent || inv.Type != ErrorTypeInvalidRequest || inv.Param != "audio" || inv.Fatal {
		t.Errorf("Invalid = %+v", inv)
	}
	if got, want := inv.Error(), "invalid_event: bad audio"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	tests := []struct {
		name     string
		code     Code
		close    websocket.StatusCode
		wantType ErrorType
	}{
		{name: "policy violation is the client's fault", code: CodeFrameTooLarge, close: ClosePolicyViolation, wantType: ErrorTypeInvalidRequest},
		{name: "message too big is the client's fault", code: CodeFrameTooLarge, close: CloseMessageTooBig, wantType: ErrorTypeInvalidRequest},
		{name: "internal error is the server's", code: CodeInternal, close: CloseInternalError, wantType: ErrorTypeServer},
		{name: "service restart is the server's", code: CodeDrainDeadline, close: CloseServiceRestart, wantType: ErrorTypeServer},
		{name: "try again later is the server's", code: CodeSessionLimit, close: CloseTryAgainLater, wantType: ErrorTypeServer},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := Fatal(tt.code, tt.close, "m")
			if !e.Fatal || e.Code != tt.code || e.CloseCode != tt.close || e.Type != tt.wantType || e.Message != "m" {
				t.Errorf("Fatal = %+v, want type %q", e, tt.wantType)
			}
		})
	}
}

func TestAllCodesAreUniqueAndSnakeCase(t *testing.T) {
	seen := map[Code]bool{}
	for _, c := range AllCodes {
		if seen[c] {
			t.Errorf("code %q listed twice", c)
		}
		seen[c] = true
		if c == "" || strings.Trim(string(c), "abcdefghijklmnopqrstuvwxyz_") != "" {
			t.Errorf("code %q is not snake_case", c)
		}
	}
	for _, c := range []Code{CodeUnauthorized, CodeRateLimited, CodeSessionLimit, CodeServerDraining, CodeInvalidEvent,
		CodeFrameTooLarge, CodeBackendUnavailable, CodeIdleTimeout, CodeMaxDuration, CodeInternal} {
		if !seen[c] {
			t.Errorf("AllCodes misses %q", c)
		}
	}
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
