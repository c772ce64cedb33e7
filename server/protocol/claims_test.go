package protocol

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestCheckClaims(t *testing.T) {
	both := SessionClaims{Model: "gpt-realtime-mini", Voice: "alloy"}
	tests := map[string]struct {
		claims SessionClaims
		// object is the session object of a session.update, or, after
		// "response:", the response object of a response.create.
		object    string
		wantParam string // "" means accepted
	}{
		"no claims, anything goes":          {SessionClaims{}, `{"model":"x","voice":"y"}`, ""},
		"claimed model named again":         {both, `{"model":"gpt-realtime-mini"}`, ""},
		"another model":                     {both, `{"model":"gpt-realtime"}`, "session.model"},
		"another voice, beta place":         {both, `{"voice":"verse"}`, "session.voice"},
		"another voice, GA place":           {both, `{"audio":{"output":{"voice":"verse"}}}`, "session.audio.output.voice"},
		"claimed voice, GA place":           {both, `{"audio":{"output":{"voice":"alloy"}}}`, ""},
		"neither named":                     {both, `{"instructions":"be brief"}`, ""},
		"only the model is fixed":           {SessionClaims{Model: "m"}, `{"voice":"verse"}`, ""},
		"a model of the wrong type":         {both, `{"model":7}`, "session.model"},
		"a voice object":                    {both, `{"audio":{"output":{"voice":{"id":"verse"}}}}`, "session.audio.output.voice"},
		"audio that is not an object":       {both, `{"audio":[]}`, "session.audio"},
		"audio output without a voice":      {both, `{"audio":{"output":{"format":{"type":"audio/pcm"}}}}`, ""},
		"null model leaves it as it is":     {both, `{"model":null}`, ""},
		"null audio output":                 {both, `{"audio":{"output":null}}`, ""},
		"voice fixed, model changed in GA":  {SessionClaims{Voice: "alloy"}, `{"model":"other"}`, ""},
		"model fixed and voice changed too": {both, `{"model":"gpt-realtime-mini","voice":"x"}`, "session.voice"},
		// What another reader would see otherwise: encoding/json folds
		// case and keeps the last of two; an upstream may match exactly,
		// or keep the first.
		"a case variant after the claimed voice":  {both, `{"voice":"verse","Voice":"alloy"}`, "session.voice"},
		"a case variant before it":                {both, `{"Voice":"verse","voice":"alloy"}`, "session.voice"},
		"a case variant alone":                    {both, `{"VOICE":"alloy"}`, "session.voice"},
		"a case variant on the way":               {both, `{"audio":{"Output":{"voice":"verse"}}}`, "session.audio.output"},
		"a case variant in the middle":            {SessionClaims{Model: "m"}, `{"model":"m","modeL":"n"}`, "session.model"},
		"the voice given twice":                   {both, `{"voice":"alloy","voice":"verse"}`, "session.voice"},
		"the audio object given twice":            {both, `{"audio":{"output":{"voice":"alloy"}},"audio":{"output":{"voice":"verse"}}}`, "session.audio"},
		"an escaped key is the key":               {both, `{"\u0076oice":"verse"}`, "session.voice"},
		"an escaped value is the value":           {both, `{"voice":"\u0061lloy"}`, ""},
		"response: another voice, beta place":     {both, `response:{"voice":"verse"}`, "response.voice"},
		"response: another voice, GA place":       {both, `response:{"audio":{"output":{"voice":"verse"}}}`, "response.audio.output.voice"},
		"response: a case variant":                {both, `response:{"voice":"alloy","Voice":"verse"}`, "response.voice"},
		"response: the claimed voice":             {both, `response:{"voice":"alloy","instructions":"x"}`, ""},
		"response: another model":                 {both, `response:{"model":"gpt-realtime"}`, "response.model"},
		"response: null":                          {both, `response:null`, ""},
		"response: none":                          {both, `response:`, ""},
		"response: another voice, no voice claim": {SessionClaims{Model: "m"}, `response:{"voice":"verse"}`, ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ev := ClientEvent{Type: TypeSessionUpdate, Session: json.RawMessage(tc.object)}
			if obj, ok := strings.CutPrefix(tc.object, "response:"); ok {
				ev = ClientEvent{Type: TypeResponseCreate}
				if obj != "" {
					ev.Response = json.RawMessage(obj)
				}
			}
			err := CheckClaims(&ev, tc.claims)
			switch {
			case tc.wantParam == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.wantParam != "" && err == nil:
				t.Fatal("accepted")
			case err != nil && (err.Param != tc.wantParam || err.Code != CodeInvalidEvent || err.Fatal):
				t.Fatalf("error %+v, want a non-fatal invalid_event on %s", err, tc.wantParam)
			}
		})
	}
}

// TestCheckClaimsOfDecodedEvents: the events as the decoder hands them
// over, and the events the claims have nothing to say about.
func TestCheckClaimsOfDecodedEvents(t *testing.T) {
	claims := SessionClaims{Voice: "alloy"}
	var d Decoder
	for msg, wantRefused := range map[string]bool{
		`{"type":"response.create","response":{"voice":"verse"}}`:                  true,
		`{"type":"response.create","response":{"audio":{"output":{"voice":"x"}}}}`: true,
		`{"type":"response.create"}`:                                               false,
		`{"type":"session.update","session":{"voice":"alloy","Voice":"verse"}}`:    true,
		`{"type":"conversation.item.create","item":{"voice":"verse"}}`:             false,
		`{"type":"input_audio_buffer.commit"}`:                                     false,
	} {
		ev, perr := d.DecodeText([]byte(msg))
		if perr != nil {
			t.Fatalf("%s: %v", msg, perr)
		}
		if err := CheckClaims(&ev, claims); (err != nil) != wantRefused {
			t.Errorf("%s: CheckClaims = %v, want refused %v", msg, err, wantRefused)
		}
	}
}

// FuzzCheckClaims: any session or response object is either accepted or
// refused with a non-fatal invalid_event naming a field; nothing panics;
// an accepted object names no other model and no other voice than the
// claims, for encoding/json (which folds case and keeps the last of two)
// as for a reader that matches names exactly.
func FuzzCheckClaims(f *testing.F) {
	for _, seed := range []string{
		`{"model":"gpt-realtime"}`, `{"voice":"verse"}`, `{"audio":{"output":{"voice":"alloy"}}}`,
		`{"instructions":"x"}`, `{"model":7}`, `{"audio":[]}`, `{"audio":{"output":null}}`, `null`, `[]`, `{`,
		`{"voice":"verse","Voice":"alloy"}`, `{"Audio":{"output":{"voice":"x"}}}`,
	} {
		f.Add([]byte(seed), "gpt-realtime-mini", "alloy", false)
		f.Add([]byte(seed), "gpt-realtime-mini", "alloy", true)
	}
	f.Fuzz(func(t *testing.T, object []byte, model, voice string, response bool) {
		ev := ClientEvent{Type: TypeSessionUpdate, Session: object}
		param := "session"
		if response {
			ev, param = ClientEvent{Type: TypeResponseCreate, Response: object}, "response"
		}
		err := CheckClaims(&ev, SessionClaims{Model: model, Voice: voice})
		if err != nil && (err.Fatal || err.Code != CodeInvalidEvent || !strings.HasPrefix(err.Param, param)) {
			t.Fatalf("CheckClaims(%q) = %+v", object, err)
		}
		if err != nil || (model == "" && voice == "") || !json.Valid(object) {
			return
		}
		var folded struct {
			Model *string
			Voice *string
			Audio *struct{ Output *struct{ Voice *string } }
		}
		if json.Unmarshal(object, &folded) != nil {
			return
		}
		if model != "" && folded.Model != nil && *folded.Model != model {
			t.Fatalf("model %q accepted with the claim %q: %s", *folded.Model, model, object)
		}
		if voice != "" && folded.Voice != nil && *folded.Voice != voice {
			t.Fatalf("voice %q accepted with the claim %q: %s", *folded.Voice, voice, object)
		}
		if voice != "" && folded.Audio != nil && folded.Audio.Output != nil && folded.Audio.Output.Voice != nil && *folded.Audio.Output.Voice != voice {
			t.Fatalf("GA voice %q accepted with the claim %q: %s", *folded.Audio.Output.Voice, voice, object)
		}
	})
}
