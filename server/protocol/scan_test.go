package protocol

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"
)

// FuzzScanObject checks the hand-written top-level walker against
// encoding/json: it accepts exactly the JSON objects that encoding/json
// accepts (up to maxMembers members), and reports each member's key and
// value as encoding/json reads them.
func FuzzScanObject(f *testing.F) {
	for _, seed := range []string{
		`{}`, ` { } `, `{"type":"input_audio_buffer.append","audio":"AAAA"}`,
		`{"a":1,"b":-2.5e3,"c":true,"d":false,"e":null,"f":[1,{"g":"}"}],"h":{"i":"\"]"}}`,
		`{"k\u0065y":"v\\\/\n"}`, `{"a":1,}`, `{"a" 1}`, `{"a":01}`, `{"a":"\x"}`, `[]`, `{"a":1} {}`,
		`{"a":tru}`, `{"a":"unterminated}`, `{"a":{"b":[1,2}}`, "{\"a\":\"\u0001\"}", `{"a":-}`, `{"a":1.}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !utf8.Valid(data) {
			return // DecodeText rejects these before walking
		}
		var got []member
		ok := scanObject(data, func(m member) bool {
			got = append(got, m)
			return true
		})
		var obj map[string]json.RawMessage
		want := json.Valid(data) && bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte("{")) && json.Unmarshal(data, &obj) == nil
		if want && !ok && len(got) >= maxMembers {
			return // more members than the walker takes: refusing is intended
		}
		if ok != want {
			t.Fatalf("scanObject = %v, encoding/json says %v for %q", ok, want, data)
		}
		if !ok {
			return
		}
		seen := map[string]int{}
		for _, m := range got {
			key := string(m.key)
			if m.keyEscaped {
				if err := json.Unmarshal(append(append([]byte{'"'}, m.key...), '"'), &key); err != nil {
					t.Fatalf("key %q does not unescape: %v", m.key, err)
				}
			}
			seen[key]++
			if !json.Valid(m.value) {
				t.Fatalf("member %q has an invalid value %q", key, m.value)
			}
			if seen[key] == 1 && countKey(got, key) == 1 {
				var a, b bytes.Buffer
				_ = json.Compact(&a, m.value)
				_ = json.Compact(&b, obj[key])
				if a.String() != b.String() {
					t.Fatalf("member %q = %s, encoding/json reads %s", key, m.value, obj[key])
				}
			}
		}
		if len(seen) != len(obj) {
			t.Fatalf("walker saw keys %v, encoding/json %d keys", seen, len(obj))
		}
	})
}

func countKey(members []member, key string) int {
	n := 0
	for _, m := range members {
		k := string(m.key)
		if m.keyEscaped {
			_ = json.Unmarshal(append(append([]byte{'"'}, m.key...), '"'), &k)
		}
		if k == key {
			n++
		}
	}
	return n
}
