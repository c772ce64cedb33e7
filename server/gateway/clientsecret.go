package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/voicegateway/voicegateway/server/auth"
	"github.com/voicegateway/voicegateway/server/config"
	"github.com/voicegateway/voicegateway/server/protocol"
)

// PathClientSecrets is OpenAI's mint endpoint for ephemeral keys; the
// official SDKs call it as client.realtime.clientSecrets.create.
const PathClientSecrets = "/v1/realtime/client_secrets"

// maxClientSecretRequest bounds the body of POST /v1/realtime/client_secrets:
// a session configuration with instructions and tools fits, more is
// refused with 413 before it is parsed.
const maxClientSecretRequest = 16 << 10

// maxSessionFields bounds the members of the request's session object.
const maxSessionFields = 64

// clientSecretRequest is OpenAI's request body: expires_after and a session
// configuration, both optional.
type clientSecretRequest struct {
	ExpiresAfter *struct {
		Anchor  string `json:"anchor"`
		Seconds *int64 `json:"seconds"`
	} `json:"expires_after"`
	Session json.RawMessage `json:"session"`
}

// clientSecretSession is what the gateway reads from the session object:
// what the token fixes for the session it opens.
type clientSecretSession struct {
	Type  *string `json:"type"`
	Model *string `json:"model"`
	Audio *struct {
		Output *struct {
			Voice *string `json:"voice"`
		} `json:"output"`
	} `json:"audio"`
}

// clientSecretResponse is OpenAI's response: the secret, when it expires,
// and the session configuration it is for.
type clientSecretResponse struct {
	Value     string          `json:"value"`
	ExpiresAt int64           `json:"expires_at"`
	Session   json.RawMessage `json:"session"`
}

// mintRequest is a parsed mint request: the token's lifetime (0: the
// default), its claims, and the session object to answer with.
type mintRequest struct {
	ttl     time.Duration
	claims  auth.SessionClaims
	session json.RawMessage
}

// errBadMint is a refused mint body; its message is safe to show.
type errBadMint struct {
	param, message string
}

func (e *errBadMint) Error() string { return e.message }

func badMint(param, message string) error { return &errBadMint{param: param, message: message} }

// parseClientSecretRequest reads an OpenAI client_secrets body. maxTTL
// bounds expires_after.seconds; defaultModel names the session's model
// when the body names none. Every error is an *errBadMint.
func parseClientSecretRequest(body []byte, maxTTL time.Duration, defaultModel string) (mintRequest, error) {
	var req clientSecretRequest
	if len(bytes.TrimSpace(body)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		if err := dec.Decode(&req); err != nil {
			return mintRequest{}, badMint("", "body must be a JSON object like {\"expires_after\":{\"anchor\":\"created_at\",\"seconds\":60},\"session\":{\"type\":\"realtime\",\"model\":\"gpt-realtime\"}}")
		}
		if dec.More() {
			return mintRequest{}, badMint("", "body must hold one JSON object")
		}
	}
	var out mintRequest
	if ea := req.ExpiresAfter; ea != nil {
		if ea.Anchor != "" && ea.Anchor != "created_at" {
			return mintRequest{}, badMint("expires_after.anchor", "expires_after.anchor must be \"created_at\"")
		}
		if ea.Seconds != nil {
			// Compared in seconds first: a huge value would overflow a
			// Duration and wrap around to a short, "valid" lifetime.
			maxSec := int64(maxTTL / time.Second)
			if *ea.Seconds < 1 || *ea.Seconds > maxSec {
				return mintRequest{}, badMint("expires_after.seconds", "expires_after.seconds must be between 1 and "+strconv.FormatInt(maxSec, 10))
			}
			out.ttl = time.Duration(*ea.Seconds) * time.Second
		}
	}
	members := map[string]json.RawMessage{}
	if len(req.Session) > 0 && string(req.Session) != "null" {
		if err := json.Unmarshal(req.Session, &members); err != nil {
			return mintRequest{}, badMint("session", "session must be a JSON object")
		}
		if len(members) > maxSessionFields {
			return mintRequest{}, badMint("session", "session has more than "+strconv.Itoa(maxSessionFields)+" fields")
		}
		var s clientSecretSession
		if err := json.Unmarshal(req.Session, &s); err != nil {
			return mintRequest{}, badMint("session", "session has a field of the wrong type")
		}
		if s.Type != nil && *s.Type != "realtime" {
			return mintRequest{}, badMint("session.type", "session.type must be \"realtime\": this gateway serves realtime sessions only")
		}
		if s.Model != nil {
			out.claims.Model = *s.Model
		}
		if s.Audio != nil && s.Audio.Output != nil && s.Audio.Output.Voice != nil {
			out.claims.Voice = *s.Audio.Output.Voice
		}
	}
	members["type"] = json.RawMessage(`"realtime"`)
	members["object"] = json.RawMessage(`"realtime.session"`)
	if out.claims.Model == "" && defaultModel != "" {
		m, _ := json.Marshal(defaultModel)
		members["model"] = m
	}
	session, err := json.Marshal(members)
	if err != nil {
		return mintRequest{}, badMint("session", "session holds a value that is not JSON")
	}
	out.session = session
	return out, nil
}

// handleClientSecret is POST /v1/realtime/client_secrets: OpenAI's request
// and response shapes, an API key to call it, and the gateway's own client
// token (ek_vgw_…) as the secret. The session's model and output voice
// become the token's claims; the rest of the session configuration is
// answered back but not applied (docs/protocol.md: send it with
// session.update once connected).
func (s *Server) handleClientSecret(w http.ResponseWriter, r *http.Request) {
	principal, ok := s.admitMinter(w, r)
	if !ok {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxClientSecretRequest))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			s.refuse(w, http.StatusRequestEntityTooLarge, protocol.CodeInvalidEvent,
				"body larger than "+strconv.Itoa(maxClientSecretRequest)+" bytes", 0)
			return
		}
		s.refuse(w, http.StatusBadRequest, protocol.CodeInvalidEvent, "could not read the body", 0)
		return
	}
	req, err := parseClientSecretRequest(body, s.authn.Tokens.MaxTTL(), s.defaultModel())
	if err != nil {
		var bad *errBadMint
		errors.As(err, &bad)
		s.refuseParam(w, http.StatusBadRequest, protocol.CodeInvalidEvent, bad.param, bad.message, 0)
		return
	}
	if !s.modelAllowed(req.claims.Model) {
		s.refuseParam(w, http.StatusBadRequest, protocol.CodeModelNotAllowed, "session.model", protocol.ModelNotAllowedMessage(req.claims.Model), 0)
		return
	}
	token, expires, ok := s.mint(w, principal, req.ttl, req.claims)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(clientSecretResponse{Value: token, ExpiresAt: expires.Unix(), Session: req.session})
}

// defaultModel is the model a session gets when it names none.
func (s *Server) defaultModel() string {
	if s.cfg.Backend == config.BackendOpenAI {
		return s.cfg.OpenAI.Model
	}
	return ""
}

// modelAllowed reports whether a client may ask for model: any model with
// the echo backend (which only echoes), one of --openai-models with the
// openai backend.
func (s *Server) modelAllowed(model string) bool {
	if model == "" || s.cfg.Backend != config.BackendOpenAI {
		return true
	}
	allowed := s.cfg.OpenAI.AllowedModels()
	return len(allowed) == 0 || slices.Contains(allowed, model)
}
