package voiceclient

import (
	"bytes"
	"fmt"
	"io"
	"testing"
)

func TestEventType(t *testing.T) {
	tests := map[string]struct {
		msg  string
		want string
	}{
		"type first":         {msg: `{"type":"response.output_audio.delta","event_id":"event_3","delta":"AAA="}`, want: "response.output_audio.delta"},
		"draining":           {msg: `{"type":"gateway.draining","reconnect_after_ms":1180}`, want: "gateway.draining"},
		"type later (slow)":  {msg: `{"event_id":"e1","error":{"code":"x"},"type":"error"}`, want: "error"},
		"spaces (slow path)": {msg: `{ "type" : "session.created" }`, want: "session.created"},
		"not JSON":           {msg: `hello`, want: ""},
		"unterminated":       {msg: `{"type":"sess`, want: ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := eventType([]byte(tc.msg)); got != tc.want {
				t.Fatalf("eventType(%s) = %q, want %q", tc.msg, got, tc.want)
			}
		})
	}
}

func TestAudioEventRoundTrip(t *testing.T) {
	frame := NewFrame(24000)
	EncodeFrame(frame, FrameHeader{Seq: 42, SentAt: 99})
	appendMsg := appendAudioEvent(nil, frame)
	// What the gateway sends back, shaped as server/protocol encodes it.
	delta := []byte(`{"type":"response.output_audio.delta","event_id":"event_9","response_id":"resp_1","item_id":"item_1_echo","output_index":0,"content_index":0,"delta":"` +
		string(appendMsg[len(appendPrefix):len(appendMsg)-len(jsonStringEnd)]) + `"}`)
	tests := map[string]struct {
		msg  []byte
		key  string
		want []byte // nil: not decodable
	}{
		"our append event (the plain echo returns it)": {msg: appendMsg, key: `"audio":"`, want: frame},
		"the gateway's delta event":                    {msg: delta, key: `"delta":"`, want: frame},
		"missing field":                                {msg: []byte(`{"type":"x"}`), key: `"delta":"`},
		"not base64":                                   {msg: []byte(`{"delta":"***"}`), key: `"delta":"`},
		"unterminated":                                 {msg: []byte(`{"delta":"AAAA`), key: `"delta":"`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := decodeBase64Field(tc.msg, tc.key, nil)
			if tc.want == nil {
				if got != nil {
					t.Fatalf("decoded %d bytes from a message that should not decode", len(got))
				}
				return
			}
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("decoded %d bytes, want the %d-byte frame", len(got), len(tc.want))
			}
			h, err := DecodeFrame(got)
			if err != nil || h.Seq != 42 {
				t.Fatalf("header %+v, %v", h, err)
			}
		})
	}
}

func TestReadAll(t *testing.T) {
	for _, size := range []int{0, 1, 4095, 4096, 4097, 100_000} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			src := bytes.Repeat([]byte{7}, size)
			got, err := readAll(iotestHalfReader{bytes.NewReader(src)}, make([]byte, 0, 16))
			if err != nil || !bytes.Equal(got, src) {
				t.Fatalf("readAll: %d bytes, %v; want %d", len(got), err, size)
			}
		})
	}
}

// iotestHalfReader returns at most half of what is asked, to exercise
// short reads.
type iotestHalfReader struct{ r io.Reader }

func (h iotestHalfReader) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:len(p)/2]
	}
	return h.r.Read(p)
}
