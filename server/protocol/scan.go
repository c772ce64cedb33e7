package protocol

import (
	"bytes"
	"encoding/json"
	"strings"
)

// The client event decoder walks the top level of each message itself
// instead of handing it to encoding/json: field names must match exactly
// (encoding/json folds case, so {"TYPE": …} would count as "type"), a field
// given twice is an error rather than last-one-wins — both matter when a
// relay forwards the raw message to an upstream that reads it its own way —
// and the hot path, input_audio_buffer.append, needs no reflection and no
// copy of its base64 audio. Containers nested inside a member are validated
// with json.Valid. FuzzScanObject checks the walker against encoding/json.

// member is one top-level member of a JSON object. key is the raw text
// between the quotes; keyEscaped says it contains escapes.
type member struct {
	key        []byte
	keyEscaped bool
	value      []byte
}

// maxMembers bounds the work for one message's top level.
const maxMembers = 64

// scanObject checks that data is exactly one JSON object, optionally
// surrounded by whitespace, and calls fn for each top-level member in
// order. It returns false when data is not such an object.
func scanObject(data []byte, fn func(m member) bool) bool {
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return false
	}
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == '}' {
		return skipSpace(data, i+1) == len(data)
	}
	for n := 0; ; n++ {
		if n == maxMembers || i >= len(data) || data[i] != '"' {
			return false
		}
		keyEnd, keyEscaped, ok := scanString(data, i)
		if !ok {
			return false
		}
		key := data[i+1 : keyEnd-1]
		i = skipSpace(data, keyEnd)
		if i >= len(data) || data[i] != ':' {
			return false
		}
		i = skipSpace(data, i+1)
		valueEnd, ok := scanValue(data, i)
		if !ok {
			return false
		}
		if !fn(member{key: key, keyEscaped: keyEscaped, value: data[i:valueEnd]}) {
			return false
		}
		i = skipSpace(data, valueEnd)
		if i >= len(data) {
			return false
		}
		switch data[i] {
		case ',':
			i = skipSpace(data, i+1)
		case '}':
			return skipSpace(data, i+1) == len(data)
		default:
			return false
		}
	}
}

func skipSpace(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

// scanString validates the JSON string starting at data[i] (a quote) and
// returns the index just past its closing quote. The caller has checked
// that data is valid UTF-8.
func scanString(data []byte, i int) (end int, escaped, ok bool) {
	for j := i + 1; j < len(data); j++ {
		switch c := data[j]; {
		case c == '"':
			return j + 1, escaped, true
		case c == '\\':
			escaped = true
			if j+1 >= len(data) {
				return 0, false, false
			}
			switch data[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j++
			case 'u':
				if j+5 >= len(data) || !isHex(data[j+2]) || !isHex(data[j+3]) || !isHex(data[j+4]) || !isHex(data[j+5]) {
					return 0, false, false
				}
				j += 5
			default:
				return 0, false, false
			}
		case c < 0x20:
			return 0, false, false
		}
	}
	return 0, false, false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// scanValue returns the end of the JSON value starting at data[i].
func scanValue(data []byte, i int) (int, bool) {
	if i >= len(data) {
		return 0, false
	}
	switch c := data[i]; c {
	case '"':
		end, _, ok := scanString(data, i)
		return end, ok
	case '{', '[':
		end, ok := skipContainer(data, i)
		if !ok || !json.Valid(data[i:end]) {
			return 0, false
		}
		return end, true
	case 't':
		return literal(data, i, "true")
	case 'f':
		return literal(data, i, "false")
	case 'n':
		return literal(data, i, "null")
	default:
		end := i
		for end < len(data) && strings.IndexByte("+-.0123456789eE", data[end]) >= 0 {
			end++
		}
		if end == i || !json.Valid(data[i:end]) {
			return 0, false
		}
		return end, true
	}
}

func literal(data []byte, i int, word string) (int, bool) {
	if !bytes.HasPrefix(data[i:], []byte(word)) {
		return 0, false
	}
	return i + len(word), true
}

// skipContainer finds the bracket that closes the object or array at
// data[i], skipping strings; json.Valid then checks what lies between.
func skipContainer(data []byte, i int) (int, bool) {
	depth := 0
	for j := i; j < len(data); j++ {
		switch data[j] {
		case '"':
			end, _, ok := scanString(data, j)
			if !ok {
				return 0, false
			}
			j = end - 1
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return j + 1, true
			}
		}
	}
	return 0, false
}

// stringValue returns the contents of a JSON string value, unescaped.
// null reads as absent. ok is false for any other kind of value.
func stringValue(value []byte) (s []byte, present, ok bool) {
	if string(value) == "null" {
		return nil, false, true
	}
	if len(value) < 2 || value[0] != '"' {
		return nil, false, false
	}
	inner := value[1 : len(value)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return inner, true, true
	}
	var decoded string
	if json.Unmarshal(value, &decoded) != nil {
		return nil, false, false
	}
	return []byte(decoded), true, true
}
