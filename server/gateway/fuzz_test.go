package gateway

import (
	"encoding/json"
	"errors"
	"testing"
	"time"
)

// FuzzClientSecretRequest: whatever the body, the parser answers a mint
// request within its bounds or an error it may show, never panics, and
// answers with one JSON object naming a realtime session.
func FuzzClientSecretRequest(f *testing.F) {
	for _, seed := range []string{
		``, `{}`, `null`, `[]`, `{} {}`,
		`{"expires_after":{"anchor":"created_at","seconds":600},"session":{"type":"realtime","model":"gpt-realtime"}}`,
		`{"expires_after":{"seconds":-1}}`, `{"expires_after":{"seconds":1e30}}`,
		`{"session":{"audio":{"output":{"voice":"marin"}},"instructions":"hi"}}`,
		`{"session":{"type":"transcription"}}`, `{"session":{"model":null}}`, `{"session":"x"}`,
		`{"session":{"a":1,"a":2}}`, `{"expires_after":null,"session":null}`,
	} {
		f.Add([]byte(seed))
	}
	const maxTTL = 10 * time.Minute
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := parseClientSecretRequest(body, maxTTL, "gpt-realtime")
		if err != nil {
			var bad *errBadMint
			if !errors.As(err, &bad) || bad.message == "" {
				t.Fatalf("error %v is not a refusal with a message", err)
			}
			return
		}
		if req.ttl < 0 || req.ttl > maxTTL {
			t.Fatalf("ttl %s out of bounds", req.ttl)
		}
		var session map[string]any
		if err := json.Unmarshal(req.session, &session); err != nil {
			t.Fatalf("answered session %q is not an object: %v", req.session, err)
		}
		if session["type"] != "realtime" || session["object"] != "realtime.session" {
			t.Fatalf("answered session %v", session)
		}
		if len(session) > maxSessionFields+2 {
			t.Fatalf("answered session has %d fields", len(session))
		}
	})
}
