package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"unicode/utf8"

	"github.com/voicegateway/voicegateway/server/protocol"
)

// upstreamEvent is what the relay reads of an upstream event: its type and,
// for audio deltas, the audio and where it belongs. The byte slices alias
// the message, so reading an event allocates nothing.
type upstreamEvent struct {
	typ          []byte
	delta        []byte // contents of the "delta" string, still JSON-escaped when deltaEscaped
	deltaEscaped bool
	responseID   []byte
	itemID       []byte
	outputIndex  int
	contentIndex int
	hasGateway   bool // the event already has a top-level "gateway" member
}

var (
	errNotUTF8       = errors.New("text is not valid UTF-8")
	errNotObject     = errors.New("not one JSON object")
	errNoType        = errors.New(`no "type" member`)
	errTypeNotString = errors.New(`"type" is not a string`)
)

// parseEvent checks that data is one valid JSON object, in valid UTF-8
// (a browser drops the whole connection on a text frame that is not),
// whose "type" is a string, and reads the members the relay acts on. It
// walks the top level with the client decoder's walker; keys match exactly
// and, as in a browser's JSON.parse, the last of duplicate members wins.
func parseEvent(data []byte, ev *upstreamEvent) error {
	*ev = upstreamEvent{}
	if !utf8.Valid(data) {
		return errNotUTF8
	}
	typeFound, typeIsString := false, false
	ok := protocol.ScanObject(data, func(m protocol.ObjectMember) bool {
		key := m.Key
		if m.KeyEscaped {
			key = unescapeString(quoted(key)) // rare: a key written with escapes
		}
		value := m.Value
		switch string(key) {
		case "type":
			typeFound, typeIsString = true, value[0] == '"'
			ev.typ = stringValue(value)
		case "delta":
			ev.delta, ev.deltaEscaped = nil, false
			if value[0] == '"' {
				ev.delta = value[1 : len(value)-1]
				ev.deltaEscaped = hasEscape(ev.delta)
			}
		case "response_id":
			ev.responseID = stringValue(value)
		case "item_id":
			ev.itemID = stringValue(value)
		case "output_index":
			ev.outputIndex = smallInt(value)
		case "content_index":
			ev.contentIndex = smallInt(value)
		case "gateway":
			ev.hasGateway = true
		}
		return true
	})
	switch {
	case !ok:
		return errNotObject
	case !typeFound:
		return errNoType
	case !typeIsString:
		return errTypeNotString
	}
	return nil
}

func hasEscape(b []byte) bool { return bytes.IndexByte(b, '\\') >= 0 }

// stringValue returns the contents of a JSON string value, unescaped, or
// nil when the value is not a string.
func stringValue(value []byte) []byte {
	if value[0] != '"' {
		return nil
	}
	inner := value[1 : len(value)-1]
	if hasEscape(inner) {
		return unescapeString(value)
	}
	return inner
}

func quoted(inner []byte) []byte {
	q := make([]byte, 0, len(inner)+2)
	q = append(q, '"')
	q = append(q, inner...)
	return append(q, '"')
}

// unescapeString decodes a JSON string the walker has already validated.
func unescapeString(q []byte) []byte {
	var s string
	_ = json.Unmarshal(q, &s)
	return []byte(s)
}

// smallInt reads a non-negative integer of up to nine digits; anything else
// (never sent for an index) reads as 0.
func smallInt(value []byte) int {
	if len(value) == 0 || len(value) > 9 {
		return 0
	}
	n := 0
	for _, c := range value {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	return n
}
