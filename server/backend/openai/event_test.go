package openai

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/voicegateway/voicegateway/server/protocol"
)

func TestParseEvent(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		want    upstreamEvent
		wantErr error
	}{
		{name: "audio delta", data: `{"type":"response.output_audio.delta","event_id":"e1","response_id":"resp_1","item_id":"item_2","output_index":0,"content_index":3,"delta":"AAEC"}`,
			want: upstreamEvent{typ: []byte("response.output_audio.delta"), delta: []byte("AAEC"), responseID: []byte("resp_1"), itemID: []byte("item_2"), contentIndex: 3}},
		{name: "nested objects and arrays are skipped", data: `{"session":{"type":"nested","a":[1,{"type":"x"}],"s":"}\"]"},"type":"session.created"}`,
			want: upstreamEvent{typ: []byte("session.created")}},
		{name: "whitespace everywhere", data: " \n{ \"type\" :\t\"error\" , \"error\" : { } }\r\n",
			want: upstreamEvent{typ: []byte("error")}},
		{name: "escaped delta", data: `{"type":"response.audio.delta","delta":"AA\/B"}`,
			want: upstreamEvent{typ: []byte("response.audio.delta"), delta: []byte(`AA\/B`), deltaEscaped: true}},
		{name: "escaped type", data: `{"type":"session.\u0063reated"}`, want: upstreamEvent{typ: []byte("session.created")}},
		{name: "escaped key", data: `{"\u0074ype":"session.created"}`, want: upstreamEvent{typ: []byte("session.created")}},
		{name: "the last of duplicate keys wins", data: `{"type":"a","type":"b"}`, want: upstreamEvent{typ: []byte("b")}},
		{name: "gateway member noticed", data: `{"type":"session.created","gateway":{}}`, want: upstreamEvent{typ: []byte("session.created"), hasGateway: true}},
		{name: "odd index values read as 0", data: `{"type":"t","output_index":-1,"content_index":1.5}`, want: upstreamEvent{typ: []byte("t")}},
		{name: "not JSON", data: `{"type":"response.output_audio.delta","delta":`, wantErr: errNotObject},
		{name: "two values", data: `{"type":"a"}{"type":"b"}`, wantErr: errNotObject},
		{name: "invalid nested value", data: `{"type":"a","session":{"x":}}`, wantErr: errNotObject},
		{name: "invalid UTF-8", data: "{\"type\":\"a\xff\"}", wantErr: errNotUTF8},
		{name: "array", data: `[{"type":"a"}]`, wantErr: errNotObject},
		{name: "string", data: `"type"`, wantErr: errNotObject},
		{name: "no type", data: `{"event_id":"e"}`, wantErr: errNoType},
		{name: "empty object", data: `{}`, wantErr: errNoType},
		{name: "type nested only", data: `{"x":{"type":"a"}}`, wantErr: errNoType},
		{name: "numeric type", data: `{"type":7}`, wantErr: errTypeNotString},
		{name: "null type", data: `{"type":null}`, wantErr: errTypeNotString},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got upstreamEvent
			err := parseEvent([]byte(tt.data), &got)
			if err != tt.wantErr {
				t.Fatalf("parseEvent = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if string(got.typ) != string(tt.want.typ) || string(got.delta) != string(tt.want.delta) ||
				got.deltaEscaped != tt.want.deltaEscaped || string(got.responseID) != string(tt.want.responseID) ||
				string(got.itemID) != string(tt.want.itemID) || got.outputIndex != tt.want.outputIndex ||
				got.contentIndex != tt.want.contentIndex || got.hasGateway != tt.want.hasGateway {
				t.Errorf("parseEvent =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

// TestParseEventAllocates nothing on the audio path.
func TestParseEventAllocates(t *testing.T) {
	data := []byte(`{"type":"response.output_audio.delta","event_id":"event_1","response_id":"resp_1","item_id":"item_1","output_index":0,"content_index":0,"delta":"AAECAwQFBgc="}`)
	var ev upstreamEvent
	if n := testing.AllocsPerRun(100, func() { _ = parseEvent(data, &ev) }); n != 0 {
		t.Errorf("parseEvent allocates %v times per event", n)
	}
}

// FuzzParseEvent compares the hand-written scanner with encoding/json: it
// must accept exactly the objects with a string "type" and read the same
// members, and never panic on anything an upstream might send.
func FuzzParseEvent(f *testing.F) {
	for _, seed := range []string{
		`{"type":"response.output_audio.delta","response_id":"r","item_id":"i","output_index":1,"content_index":2,"delta":"AAEC"}`,
		`{"session":{"type":"x","a":[1,"]",{"b":"}"}]},"type":"session.created","gateway":null}`,
		`{"type":"a\"b","delta":"x\\y"}`,
		`{"\u0074ype":"x"}`,
		` {"type" : "t" } `,
		`{"type":"a","type":"b"}`,
		`{"type":1}`,
		`[]`,
		`{"type":"a"`,
		`{}`,
		"",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var ev upstreamEvent
		err := parseEvent(data, &ev)
		if !utf8.Valid(data) {
			return // encoding/json rewrites invalid UTF-8; the scanner keeps the bytes
		}
		var m map[string]json.RawMessage
		if err != nil && topLevelMembers(data) > protocol.MaxObjectMembers {
			return // more members than the walker takes: refusing is intended
		}
		if json.Unmarshal(data, &m) != nil || m == nil {
			if err == nil {
				t.Fatalf("accepted %q, which is not a JSON object", data)
			}
			return
		}
		var typ string
		if json.Unmarshal(m["type"], &typ) != nil || m["type"] == nil || string(m["type"]) == "null" {
			if err == nil {
				t.Fatalf("accepted %q without a string type", data)
			}
			return
		}
		if err != nil {
			t.Fatalf("rejected %q: %v", data, err)
		}
		if string(ev.typ) != typ {
			t.Fatalf("type = %q, want %q in %q", ev.typ, typ, data)
		}
		var delta string
		if raw, ok := m["delta"]; ok && json.Unmarshal(raw, &delta) == nil && raw[0] == '"' {
			got := ev.delta
			if ev.deltaEscaped {
				got = unescapeString(quoted(got))
			}
			if string(got) != delta {
				t.Fatalf("delta = %q, want %q in %q", got, delta, data)
			}
		}
		var id string
		if raw, ok := m["item_id"]; ok && json.Unmarshal(raw, &id) == nil && raw[0] == '"' && string(ev.itemID) != id {
			t.Fatalf("item_id = %q, want %q in %q", ev.itemID, id, data)
		}
		if _, ok := m["gateway"]; ok != ev.hasGateway {
			t.Fatalf("hasGateway = %v in %q", ev.hasGateway, data)
		}
	})
}

// topLevelMembers counts the members of a JSON object, duplicates included.
func topLevelMembers(data []byte) int {
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil {
		return 0
	}
	n := 0
	for dec.More() {
		var v json.RawMessage
		if _, err := dec.Token(); err != nil || dec.Decode(&v) != nil {
			return n
		}
		n++
	}
	return n
}
