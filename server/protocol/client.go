package protocol

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// Client event types (OpenAI Realtime GA names).
const (
	TypeSessionUpdate    = "session.update"
	TypeInputAudioAppend = "input_audio_buffer.append"
	TypeInputAudioCommit = "input_audio_buffer.commit"
	TypeInputAudioClear  = "input_audio_buffer.clear"
	TypeResponseCreate   = "response.create"
	TypeResponseCancel   = "response.cancel"
	// Conversation events: the echo backend answers them, relays pass
	// them on; the decoder leaves them to the backend (Raw).
	TypeItemCreate         = "conversation.item.create"
	TypeItemRetrieve       = "conversation.item.retrieve"
	TypeItemDelete         = "conversation.item.delete"
	TypeItemTruncate       = "conversation.item.truncate"
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

// Decoder decodes client messages, reusing its audio buffer between calls.
// A Decoder belongs to one session's reader and is not safe for concurrent use.
type Decoder struct {
	audio []byte
}

// fields holds the raw values of the top-level members the gateway reads.
// Other members are ignored, as the OpenAI API ignores them.
type fields struct {
	typ, eventID, audio, session, response, responseID []byte
}

// knownFields are the member names the gateway reads, in the order of
// fields.slot.
var knownFields = [...]string{"type", "event_id", "audio", "session", "response", "response_id"}

// slot is where the value of knownFields[i] goes. A switch rather than a
// table of functions: a call through a function value made every decoded
// message's fields escape to the heap, an allocation per audio frame.
func (f *fields) slot(i int) *[]byte {
	switch i {
	case 0:
		return &f.typ
	case 1:
		return &f.eventID
	case 2:
		return &f.audio
	case 3:
		return &f.session
	case 4:
		return &f.response
	default:
		return &f.responseID
	}
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
	var f fields
	var problem *Error
	valid := scanObject(data, func(m member) bool {
		key := m.key
		if m.keyEscaped {
			k, _, ok := stringValue(append(append([]byte{'"'}, key...), '"'))
			if !ok {
				return false
			}
			key = k
		}
		for i, name := range knownFields {
			switch {
			case string(key) == name:
				slot := f.slot(i)
				if *slot != nil {
					problem = Invalid(name, "field "+name+" is given more than once")
					return false
				}
				*slot = m.value
			case len(key) == len(name) && bytes.EqualFold(key, []byte(name)):
				problem = Invalid(name, "field names are case-sensitive: write "+strconv.Quote(name))
				return false
			}
		}
		return true
	})
	if problem != nil {
		return ClientEvent{}, problem
	}
	if !valid {
		return ClientEvent{}, Invalid("", "message is not a valid JSON event: "+jsonSyntaxSummary(data))
	}
	ev := ClientEvent{Raw: data}
	// The event id is read first so that an error about the type can
	// still name the client event; an unusable id is reported after.
	eventID, _, idIsString := stringValue(f.eventID)
	idOK := (f.eventID == nil || idIsString) && len(eventID) <= maxEventIDLength
	if idOK {
		ev.EventID = string(eventID)
	}
	typ, present, ok := stringValue(f.typ)
	switch {
	case f.typ != nil && !ok:
		return ev, Invalid("type", "type must be a string")
	case !present || len(typ) == 0:
		return ev, Invalid("type", "missing event type")
	case len(typ) > maxTypeLength:
		return ev, Invalid("type", "event type is longer than 128 bytes")
	}
	ev.Type = internType(typ)
	switch {
	case !idIsString && f.eventID != nil:
		return ev, Invalid("event_id", "event_id must be a string")
	case !idOK:
		return ev, Invalid("event_id", "event_id is longer than 128 bytes")
	}
	for _, sf := range []struct {
		name  string
		value []byte
	}{{"audio", f.audio}, {"response_id", f.responseID}} {
		if _, _, ok := stringValue(sf.value); sf.value != nil && !ok {
			return ev, Invalid(sf.name, sf.name+" must be a string")
		}
	}
	switch ev.Type {
	case TypeInputAudioAppend:
		b64, present, _ := stringValue(f.audio)
		if !present {
			return ev, Invalid("audio", "input_audio_buffer.append needs an audio field with base64 PCM16")
		}
		n := base64.StdEncoding.DecodedLen(len(b64))
		if cap(d.audio) < n {
			d.audio = make([]byte, n)
		}
		m, err := base64.StdEncoding.Strict().Decode(d.audio[:n], b64)
		if err != nil {
			return ev, Invalid("audio", "audio is not valid base64")
		}
		// Whole samples are the backend's concern: PCM16 takes two bytes a
		// sample, G.711 (which the openai backend relays) one.
		ev.Audio = d.audio[:m]
	case TypeSessionUpdate:
		if !isJSONObject(f.session) {
			return ev, Invalid("session", "session.update needs a session object")
		}
		if len(f.session) > maxSessionObjectLength {
			return ev, Invalid("session", "session object is larger than 64 KiB")
		}
		ev.Session = f.session
	case TypeResponseCreate:
		if f.response != nil && !isJSONObject(f.response) && string(f.response) != "null" {
			return ev, Invalid("response", "response must be an object")
		}
		ev.Response = f.response
	case TypeResponseCancel:
		responseID, _, _ := stringValue(f.responseID)
		if len(responseID) > maxResponseIDLength {
			return ev, Invalid("response_id", "response_id is longer than 128 bytes")
		}
		ev.ResponseID = string(responseID)
	}
	return ev, nil
}

// internType returns the known event types without allocating.
func internType(typ []byte) string {
	switch string(typ) {
	case TypeSessionUpdate:
		return TypeSessionUpdate
	case TypeInputAudioAppend:
		return TypeInputAudioAppend
	case TypeInputAudioCommit:
		return TypeInputAudioCommit
	case TypeInputAudioClear:
		return TypeInputAudioClear
	case TypeResponseCreate:
		return TypeResponseCreate
	case TypeResponseCancel:
		return TypeResponseCancel
	}
	return string(typ)
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

func isJSONObject(raw json.RawMessage) bool {
	t := bytes.TrimLeft(raw, " \t\r\n")
	return len(t) > 0 && t[0] == '{'
}

// jsonSyntaxSummary says where a message stops being JSON, without echoing
// client data. It runs only on the error path.
func jsonSyntaxSummary(data []byte) string {
	var v any
	switch e := json.Unmarshal(data, &v).(type) {
	case *json.SyntaxError:
		return "syntax error at offset " + strconv.FormatInt(e.Offset, 10)
	case nil:
		return "more than one value, or too many fields (at most 64)"
	}
	return "malformed JSON"
}
