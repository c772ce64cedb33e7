package gateway

import (
	"net/http"
	"strings"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"

	"github.com/voicegateway/voicegateway/server/auth"
	"github.com/voicegateway/voicegateway/server/config"
	"github.com/voicegateway/voicegateway/server/session/sessiontest"
)

// clientSecret is the body of a 200 from POST /v1/realtime/client_secrets.
type clientSecret struct {
	Value     string         `json:"value"`
	ExpiresAt int64          `json:"expires_at"`
	Session   map[string]any `json:"session"`
}

func (h *harness) mintSecret(apiKey, body string) clientSecret {
	h.t.Helper()
	return mintAt[clientSecret](h, PathClientSecrets, apiKey, body)
}

// TestClientSecretsOpenAIShape: the mint endpoint of the OpenAI SDKs
// answers with value/expires_at/session, the value an ek_ client token
// bound to the session's model and voice, and the browser flow
// (subprotocols realtime + openai-insecure-api-key.<value>) opens a
// session with it.
func TestClientSecretsOpenAIShape(t *testing.T) {
	clk := testingclock.NewFakeClock(time.Unix(1_795_000_000, 0))
	h := startWithClock(t, clk, withAuth(t, nil))
	cases := []struct {
		name    string
		body    string
		wantTTL time.Duration
	}{
		{name: "no body", wantTTL: 60 * time.Second},
		{name: "the SDK's request", body: `{"expires_after":{"anchor":"created_at","seconds":300},"session":{"type":"realtime","model":"gpt-realtime","instructions":"be brief","audio":{"output":{"voice":"marin"}}}}`, wantTTL: 300 * time.Second},
		{name: "session only", body: `{"session":{"type":"realtime"}}`, wantTTL: 60 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := *h
			h.t = t
			s := h.mintSecret(testAPIKey, tc.body)
			if !strings.HasPrefix(s.Value, "ek_") || !strings.HasPrefix(s.Value, auth.TokenPrefix) {
				t.Errorf("value %q, want an ek_ client token", s.Value)
			}
			if want := clk.Now().Add(tc.wantTTL).Unix(); s.ExpiresAt != want {
				t.Errorf("expires_at = %d, want %d", s.ExpiresAt, want)
			}
			if s.Session["type"] != "realtime" || s.Session["object"] != "realtime.session" {
				t.Errorf("session = %v, want a realtime.session", s.Session)
			}
		})
	}
	s := h.mintSecret(testAPIKey, `{"session":{"type":"realtime","model":"gpt-realtime","instructions":"be brief","audio":{"output":{"voice":"marin"}}}}`)
	if s.Session["instructions"] != "be brief" || s.Session["model"] != "gpt-realtime" {
		t.Errorf("session = %v, want the request's configuration back", s.Session)
	}
	c, r := h.tryAuthDial("model=gpt-realtime", nil, "realtime", auth.SubprotocolOpenAIKeyPrefix+s.Value)
	if r != nil {
		t.Fatalf("browser login refused: HTTP %d %s", r.status, r.body)
	}
	if c.Subprotocol() != "realtime" {
		t.Errorf("subprotocol %q, want realtime", c.Subprotocol())
	}
	sessiontest.ReadUntil(t, c, "session.created")
	// The secret is bound to its voice.
	sessiontest.Send(t, c, map[string]any{"type": "session.update", "session": map[string]any{"audio": map[string]any{"output": map[string]any{"voice": "alloy"}}}})
	if f := sessiontest.ReadUntil(t, c, "error"); f[len(f)-1].ErrorCode() != "invalid_event" {
		t.Errorf("voice change: %v", f)
	}
	h.closeNormally(c, 0)

	// A secret minted for one model does not open a session for another.
	s = h.mintSecret(testAPIKey, `{"session":{"model":"gpt-realtime"}}`)
	r2 := h.mustRefuse(http.StatusBadRequest, "model=gpt-realtime-mini", nil, "realtime", auth.SubprotocolOpenAIKeyPrefix+s.Value)
	if code, _, _ := r2.errorBody(t); code != "model_not_allowed" {
		t.Errorf("code %q, want model_not_allowed", code)
	}
}

// TestClientSecretsRefusals: every refusal is an OpenAI-shaped error with a
// documented code, mints nothing, and quotes no credential.
func TestClientSecretsRefusals(t *testing.T) {
	h := start(t, withAuth(t, nil))
	token := h.mintSecret(testAPIKey, "").Value
	cases := []struct {
		name       string
		header     http.Header
		body       string
		wantStatus int
		wantCode   string
	}{
		{name: "no credentials", wantStatus: http.StatusUnauthorized, wantCode: "unauthorized"},
		{name: "client secret minting another", header: bearer(token), wantStatus: http.StatusForbidden, wantCode: "unauthorized"},
		{name: "not JSON", header: bearer(testAPIKey), body: "seconds=60", wantStatus: http.StatusBadRequest, wantCode: "invalid_event"},
		{name: "two objects", header: bearer(testAPIKey), body: "{} {}", wantStatus: http.StatusBadRequest, wantCode: "invalid_event"},
		{name: "another anchor", header: bearer(testAPIKey), body: `{"expires_after":{"anchor":"first_use","seconds":60}}`, wantStatus: http.StatusBadRequest, wantCode: "invalid_event"},
		{name: "seconds over the maximum", header: bearer(testAPIKey), body: `{"expires_after":{"seconds":601}}`, wantStatus: http.StatusBadRequest, wantCode: "invalid_event"},
		{name: "seconds overflowing a duration", header: bearer(testAPIKey), body: `{"expires_after":{"seconds":18446744074}}`, wantStatus: http.StatusBadRequest, wantCode: "invalid_event"},
		{name: "zero seconds", header: bearer(testAPIKey), body: `{"expires_after":{"seconds":0}}`, wantStatus: http.StatusBadRequest, wantCode: "invalid_event"},
		{name: "transcription session", header: bearer(testAPIKey), body: `{"session":{"type":"transcription"}}`, wantStatus: http.StatusBadRequest, wantCode: "invalid_event"},
		{name: "session not an object", header: bearer(testAPIKey), body: `{"session":"realtime"}`, wantStatus: http.StatusBadRequest, wantCode: "invalid_event"},
		{name: "model not a string", header: bearer(testAPIKey), body: `{"session":{"model":7}}`, wantStatus: http.StatusBadRequest, wantCode: "invalid_event"},
		{name: "model with a space", header: bearer(testAPIKey), body: `{"session":{"model":"gpt realtime"}}`, wantStatus: http.StatusBadRequest, wantCode: "invalid_event"},
		{name: "body over 16 KiB", header: bearer(testAPIKey), body: `{"session":{"instructions":"` + strings.Repeat("x", 17<<10) + `"}}`, wantStatus: http.StatusRequestEntityTooLarge, wantCode: "invalid_event"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := *h
			h.t = t
			minted := h.tokensMinted()
			r := h.post(PathClientSecrets, tc.header, tc.body)
			if r.status != tc.wantStatus {
				t.Fatalf("HTTP %d %s, want %d", r.status, r.body, tc.wantStatus)
			}
			if code, typ, message := r.errorBody(t); code != tc.wantCode || typ != "invalid_request_error" || message == "" {
				t.Errorf("error %q %q %q, want an invalid_request_error with code %s", code, typ, message, tc.wantCode)
			}
			if strings.Contains(string(r.body), token) || strings.Contains(string(r.body), testAPIKey) {
				t.Errorf("the refusal carries a credential: %s", r.body)
			}
			if got := h.tokensMinted(); got != minted {
				t.Errorf("tokens minted went from %v to %v on a refusal", minted, got)
			}
		})
	}
}

// TestClientSecretsModelAllowlist: with the openai backend, a secret for a
// model outside --openai-models is refused at the mint.
func TestClientSecretsModelAllowlist(t *testing.T) {
	h := start(t, withAuth(t, func(c *config.Config) {
		openaiConfig(t, "ws://127.0.0.1:9/v1/realtime")(c)
		c.OpenAI.Model = "gpt-realtime"
	}))
	if s := h.mintSecret(testAPIKey, `{"session":{"type":"realtime"}}`); s.Session["model"] != "gpt-realtime" {
		t.Errorf("session = %v, want the configured model named", s.Session)
	}
	h.mintSecret(testAPIKey, `{"session":{"model":"gpt-realtime"}}`)
	r := h.post(PathClientSecrets, bearer(testAPIKey), `{"session":{"model":"gpt-realtime-mini"}}`)
	if code, _, _ := r.errorBody(t); r.status != http.StatusBadRequest || code != "model_not_allowed" ||
		!strings.Contains(string(r.body), `"param":"session.model"`) {
		t.Errorf("HTTP %d %s, want 400 model_not_allowed naming session.model", r.status, r.body)
	}
	r = h.post(PathClientSecrets, bearer(testAPIKey), `{"expires_after":{"anchor":"first_use"}}`)
	if !strings.Contains(string(r.body), `"param":"expires_after.anchor"`) {
		t.Errorf("HTTP %d %s, want the refusal naming expires_after.anchor", r.status, r.body)
	}
}

// TestAPIKeyInBrowserSubprotocol: a long-lived API key in the OpenAI
// subprotocol is refused with a message that says what to do, unless the
// operator allows it.
func TestAPIKeyInBrowserSubprotocol(t *testing.T) {
	h := start(t, withAuth(t, nil))
	r := h.mustRefuse(http.StatusUnauthorized, "", nil, "realtime", auth.SubprotocolOpenAIKeyPrefix+testAPIKey)
	if code, _, message := r.errorBody(t); code != "unauthorized" || !strings.Contains(message, "client_secrets") ||
		!strings.Contains(message, "--allow-api-key-in-browser") || strings.Contains(message, testAPIKey) {
		t.Errorf("refusal %q %q", code, message)
	}

	allowed := start(t, withAuth(t, func(c *config.Config) { c.AllowAPIKeyInBrowser = true }))
	c, _ := allowed.mustOpen("", nil, "realtime", auth.SubprotocolOpenAIKeyPrefix+testAPIKey)
	if c.Subprotocol() != "realtime" {
		t.Errorf("subprotocol %q", c.Subprotocol())
	}
	allowed.closeNormally(c, 0)
	// Only the OpenAI entry: the gateway's own stays for tokens.
	allowed.mustRefuse(http.StatusUnauthorized, "", nil, "realtime", auth.SubprotocolTokenPrefix+testAPIKey)
}
