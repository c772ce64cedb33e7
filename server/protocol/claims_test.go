package protocol

import (
	"encoding/json"
	"testing"
)

func TestCheckSessionClaims(t *testing.T) {
	both := SessionClaims{Model: "gpt-realtime-mini", Voice: "alloy"}
	tests := map[string]struct {
		claims    SessionClaims
		session   string
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
		"a model of the wrong type":         {both, `{"model":7}`, "session"},
		"audio output without a voice":      {both, `{"audio":{"output":{"format":{"type":"audio/pcm"}}}}`, ""},
		"null model leaves it as it is":     {both, `{"model":null}`, ""},
		"voice fixed, model changed in GA":  {SessionClaims{Voice: "alloy"}, `{"model":"other"}`, ""},
		"model fixed and voice changed too": {both, `{"model":"gpt-realtime-mini","voice":"x"}`, "session.voice"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := CheckSessionClaims(json.RawMessage(tc.session), tc.claims)
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

// FuzzCheckSessionClaims: any session object is either accepted or refused
// with a non-fatal invalid_event naming a field; nothing panics; a session
// object that names neither a model nor a voice passes.
func FuzzCheckSessionClaims(f *testing.F) {
	for _, seed := range []string{
		`{"model":"gpt-realtime"}`, `{"voice":"verse"}`, `{"audio":{"output":{"voice":"alloy"}}}`,
		`{"instructions":"x"}`, `{"model":7}`, `{"audio":[]}`, `{"audio":{"output":null}}`, `null`, `[]`, `{`,
	} {
		f.Add([]byte(seed), "gpt-realtime-mini", "alloy")
	}
	f.Fuzz(func(t *testing.T, session []byte, model, voice string) {
		err := CheckSessionClaims(json.RawMessage(session), SessionClaims{Model: model, Voice: voice})
		if err != nil && (err.Fatal || err.Code != CodeInvalidEvent || err.Param == "") {
			t.Fatalf("CheckSessionClaims(%q) = %+v", session, err)
		}
		if err == nil && (model != "" || voice != "") && json.Valid(session) {
			var v map[string]any
			if json.Unmarshal(session, &v) == nil {
				if m, ok := v["model"].(string); ok && model != "" && m != model {
					t.Fatalf("model %q accepted with the claim %q", m, model)
				}
			}
		}
	})
}
