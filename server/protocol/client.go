package protocol

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"unicode/utf8"
)

// Client event types (OpenAI Realtime GA names).
const (
	TypeSessionUpdate      = "session.update"
	TypeInputAudioAppend   = "input_audio_buffer.append"
	TypeInputAudioCommit   = "input_audio_buffer.commit"
	TypeInputAudioClear    = "input_audio_buffer.clear"
	TypeResponseCreate     = "response.create"
	TypeResponseCancel     = "response.cancel"
	maxEventIDLength       = 128
	maxTypeLength          = 128
	maxResponseIDLength    = 128
	maxSessionObjectLength = 64 << 10
)

// ClientEvent is one decoded client message. Binary audio messages decode to
// an input_audio_buffer.append with Binary set and Raw nil.
type ClientEvent struct {
	Type    string
	EventID string
	// Audio is the decoded PCM16 LE payload of input_audio_buffer.append.
	// For base64 events it is decoded into the buffer passed to the decoder
	// and is only valid until that buffer is reused.
	Audio []byte
	// Session is the session object of session.update, validated as a JSON object.
	Session json.RawMessage
	// Response is the optional response object of response.create.
	Response json.RawMessage
	// ResponseID is the optional target of response.cancel.
	ResponseID string
	// Binary is set when the event arrived as a binary audio message.
	Binary bool
	// Raw is the original message, kept for backends that relay events
	// unchanged. It aliases the read buffer.
	Raw []byte
}

// Known reports whether the event type is one the gateway itself understands.
// Backends that relay to an upstream may accept unknown types; the echo
// backend rejects them.
func (e *ClientEvent) Known() bool {
	switch e.Type {
	case TypeSessionUpdate, TypeInputAudioAppend, TypeInputAudioCommit,
		TypeInputAudioClear, TypeResponseCreate, TypeResponseCancel:
		return true
	}
	return false
}

// wireClientEvent mirrors the JSON fields the gateway reads. Unknown fields
// are ignored, as the OpenAI API ignores them; known ones are validated.
type wireClientEvent struct {
	Type       string          `json:"type"`
	EventID    string          `json:"event_id"`
	Audio      json.RawMessage `json:"audio"`
	Session    json.RawMessage `json:"session"`
	Response   json.RawMessage `json:"response"`
	ResponseID string          `json:"response_id"`
}

// Decoder decodes client messages, reusing its audio buffer between calls.
// A Decoder belongs to one session's reader and is not safe for concurrent use.
type Decoder struct {
	audio []byte
}

// DecodeText decodes one text (JSON) message. The returned event's Audio and
// Raw alias internal or caller buffers and are valid until the next call.
func (d *Decoder) DecodeText(data []byte) (ClientEvent, *Error) {
	if !utf8.Valid(data) {
		return ClientEvent{}, Invalid("", "text message is not valid UTF-8")
	}
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return ClientEvent{}, Invalid("", "message must be a JSON object")
	}
	var w wireClientEvent
	if err := json.Unmarshal(data, &w); err != nil {
		return ClientEvent{}, Invalid("", "message is not a valid JSON event: "+jsonErrorSummary(err))
	}
	ev := ClientEvent{Type: w.Type, EventID: w.EventID, Raw: data}
	if len(w.EventID) > maxEventIDLength {
		return ev.withoutID(), Invalid("event_id", "event_id is longer than 128 bytes")
	}
	switch {
	case w.Type == "":
		return ev, Invalid("type", "missing event type")
	case len(w.Type) > maxTypeLength:
		ev.Type = ""
		return ev, Invalid("type", "event type is longer than 128 bytes")
	}
	switch w.Type {
	case TypeInputAudioAppend:
		b64, ok := jsonStringBytes(w.Audio)
		if !ok {
			return ev, Invalid("audio", "input_audio_buffer.append needs an audio field with base64 PCM16")
		}
		n := base64.StdEncoding.DecodedLen(len(b64))
		if cap(d.audio) < n {
			d.audio = make([]byte, n)
		}
		m, err := base64.StdEncoding.Decode(d.audio[:n], b64)
		if err != nil {
			return ev, Invalid("audio", "audio is not valid base64")
		}
		if m%2 != 0 {
			return ev, Invalid("audio", "audio must be whole PCM16 samples (an even number of bytes)")
		}
		ev.Audio = d.audio[:m]
	case TypeSessionUpdate:
		if !isJSONObject(w.Session) {
			return ev, Invalid("session", "session.update needs a session object")
		}
		if len(w.Session) > maxSessionObjectLength {
			return ev, Invalid("session", "session object is larger than 64 KiB")
		}
		ev.Session = w.Session
	case TypeResponseCreate:
		if len(w.Response) > 0 && !isJSONObject(w.Response) && string(w.Response) != "null" {
			return ev, Invalid("response", "response must be an object")
		}
		ev.Response = w.Response
	case TypeResponseCancel:
		if len(w.ResponseID) > maxResponseIDLength {
			return ev, Invalid("response_id", "response_id is longer than 128 bytes")
		}
		ev.ResponseID = w.ResponseID
	}
	return ev, nil
}

// DecodeBinary turns a binary audio message into an append event. The audio
// aliases data.
func (d *Decoder) DecodeBinary(data []byte) (ClientEvent, *Error) {
	if len(data)%2 != 0 {
		return ClientEvent{}, Invalid("audio", "binary audio must be whole PCM16 samples (an even number of bytes)")
	}
	return ClientEvent{Type: TypeInputAudioAppend, Audio: data, Binary: true}, nil
}

func (e ClientEvent) withoutID() ClientEvent {
	e.EventID = ""
	return e
}

// jsonStringBytes returns the contents of a JSON string without copying when
// it has no escapes, which is always the case for base64 from real encoders.
func jsonStringBytes(raw json.RawMessage) ([]byte, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return nil, false
	}
	inner := raw[1 : len(raw)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return inner, true
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return nil, false
	}
	return []byte(s), true
}

func isJSONObject(raw json.RawMessage) bool {
	t := bytes.TrimLeft(raw, " \t\r\n")
	return len(t) > 0 && t[0] == '{'
}

// jsonErrorSummary keeps decoder errors short and free of echoed client data.
func jsonErrorSummary(err error) string {
	switch e := err.(type) {
	case *json.SyntaxError:
		return "syntax error at offset " + itoa(e.Offset)
	case *json.UnmarshalTypeError:
		return "field " + e.Field + " has the wrong type"
	}
	return "malformed JSON"
}

func itoa(n int64) string {
	var b [20]byte
	return string(appendInt(b[:0], n))
}
