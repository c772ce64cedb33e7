package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/go-logr/logr"

	"github.com/voicegateway/voicegateway/server/auth"
	"github.com/voicegateway/voicegateway/server/clientip"
	"github.com/voicegateway/voicegateway/server/protocol"
	"github.com/voicegateway/voicegateway/server/ratelimit"
	"github.com/voicegateway/voicegateway/server/session"
	"github.com/voicegateway/voicegateway/server/web"
)

// Public paths.
const (
	PathRealtime     = "/v1/realtime"
	PathClientTokens = "/v1/client_tokens"
	maxTokenRequest  = 4 << 10
)

func (s *Server) publicHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET "+PathRealtime, &session.Acceptor{
		Registry: s.sessions,
		Options: session.Options{
			Config: s.sessionConfig(), Clock: s.clock, Backend: s.backend, Metrics: s.metrics,
			Log: s.log.WithName("session"), Sealer: s.sealer, Parker: s.parker,
		},
		Admit:         s.admitSession,
		InFlight:      &s.handlers,
		Memory:        s.memory,
		MaxHandshakes: s.cfg.Sessions.MaxHandshakes,
		Refuse:        s.refuse,
		Revoked:       s.revoked,
	})
	mux.HandleFunc("POST "+PathClientSecrets, s.handleClientSecret)
	// The gateway's own mint endpoint of earlier releases, kept as an
	// alias with its own body (docs/protocol.md).
	mux.HandleFunc("POST "+PathClientTokens, s.handleClientToken)
	web.Register(mux) // the demo page at /
	return mux
}

// httpError is the JSON body of a refused HTTP request, shaped like the
// error object of an error event so clients parse one thing.
type httpError struct {
	Error protocol.ErrorBody `json:"error"`
}

func (s *Server) refuse(w http.ResponseWriter, status int, code protocol.Code, message string, retryAfter time.Duration) {
	s.refuseParam(w, status, code, "", message, retryAfter)
}

// refuseParam is refuse naming the request field to blame (OpenAI's param).
func (s *Server) refuseParam(w http.ResponseWriter, status int, code protocol.Code, param, message string, retryAfter time.Duration) {
	s.metrics.UpgradesRejected.WithLabelValues(string(code)).Inc()
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(retryAfter.Seconds()))))
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="voicegateway"`)
	}
	typ := protocol.ErrorTypeInvalidRequest
	if status >= 500 {
		typ = protocol.ErrorTypeServer
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	body := protocol.ErrorBody{Type: typ, Code: code, Message: message}
	if param != "" {
		body.Param = &param
	}
	_ = json.NewEncoder(w).Encode(httpError{Error: body})
}

// admission is who a request comes from: its credential's principal and
// its client address, as the limits count it.
type admission struct {
	principal auth.Principal
	ip        netip.Addr
	// network is what the rate limiter and the per-address session limit
	// count: the address for IPv4, its /64 for IPv6 (one subscriber's
	// allocation, which holds as many addresses as it likes).
	network netip.Prefix
	// releaseToken gives back the client token's use (sessions only).
	releaseToken func()
}

// clientNetwork is the prefix an address is counted by: itself (IPv4,
// IPv4-mapped IPv6 unmapped), or its /64 (IPv6).
func clientNetwork(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p
	}
	return netip.PrefixFrom(ip, ip.BitLen())
}

// admit runs the checks every public request passes before any work is
// done for it: draining, then the client network's standing with the auth
// rate limiter, then authentication and, for a session opened with a
// client token (useToken), the token's replay cache. It writes the refusal
// itself and reports whether the request may go on.
func (s *Server) admit(w http.ResponseWriter, r *http.Request, useToken bool) (admission, bool) {
	if s.drainer.Refusing() {
		s.refuse(w, http.StatusServiceUnavailable, protocol.CodeServerDraining,
			"this server is shutting down; retry, the next attempt reaches a ready server", s.cfg.Drain.ReconnectAfter)
		return admission{}, false
	}
	a := admission{ip: clientip.FromRequest(r, s.trusted)}
	a.network = clientNetwork(a.ip)
	// The limiter counts the network: an IPv6 client cannot escape a block
	// by moving to the next address of its /64.
	limiterKey := a.network.Addr()
	switch d := s.limiter.Check(limiterKey); d.Verdict {
	case ratelimit.Block:
		s.refuse(w, http.StatusTooManyRequests, protocol.CodeRateLimited, "too many failed authentications from this address", d.RetryAfter)
		return admission{}, false
	case ratelimit.Slow:
		// A suspicious address waits before its attempt is even looked at,
		// which makes guessing keys slow without refusing honest retries.
		// --auth-suspicious-delay 0 means no delay; the limiter's own
		// config reads a zero as "use the default". The waiting requests
		// are bounded: beyond half of --max-handshakes they are refused at
		// once, so that waiters cannot hold every handshake slot.
		if s.cfg.RateLimit.SuspiciousDelay > 0 {
			if s.suspiciousWaiting.Add(1) > s.maxSuspiciousWaiting() {
				s.suspiciousWaiting.Add(-1)
				s.refuse(w, http.StatusTooManyRequests, protocol.CodeRateLimited, "too many attempts from suspicious addresses are waiting; retry later", d.Delay)
				return admission{}, false
			}
			delayed := s.metrics.Admission.AuthDelayed
			delayed.Inc()
			slept := s.sleep(r.Context(), d.Delay)
			delayed.Dec()
			s.suspiciousWaiting.Add(-1)
			if !slept {
				return admission{}, false
			}
		}
	}
	if s.authn == nil {
		return a, true
	}
	p, err := s.authn.Authenticate(r)
	if err == nil && useToken && p.Kind == auth.KindClientToken {
		release, ok := s.tokenUses.Use(p.TokenID, p.ExpiresAt)
		if ok {
			a.releaseToken = release
		} else {
			err = auth.ErrReusedToken
		}
	}
	if err != nil {
		reason := auth.Reason(err)
		s.metrics.AuthFailures.WithLabelValues(reason).Inc()
		if d := s.limiter.Failure(limiterKey); d.Verdict == ratelimit.Block {
			s.log.Info("client address blocked after failed authentications", "network", a.network.String(), "retryAfter", d.RetryAfter.String())
		}
		s.refuse(w, http.StatusUnauthorized, protocol.CodeUnauthorized, s.authMessage(err), 0)
		return admission{}, false
	}
	s.limiter.Success(limiterKey)
	a.principal = p
	return a, true
}

// maxSuspiciousWaiting is how many requests may wait out the rate
// limiter's delay at once: half the handshake slots.
func (s *Server) maxSuspiciousWaiting() int64 {
	return int64(max(1, s.cfg.Sessions.MaxHandshakes/2))
}

// authMessage says what was wrong without echoing any credential.
func (s *Server) authMessage(err error) string {
	switch {
	case errors.Is(err, auth.ErrReusedToken):
		return "this client token already opened the " + strconv.Itoa(s.cfg.Sessions.MaxPerToken) +
			" session(s) it may open; mint a new one for each connection"
	case errors.Is(err, auth.ErrMissingCredentials):
		return "missing credentials: send Authorization: Bearer <api key>, or a client token as a subprotocol or ?token="
	case errors.Is(err, auth.ErrExpiredToken):
		return "client token expired; mint a new one"
	case errors.Is(err, auth.ErrMalformedCredentials):
		return err.Error()
	}
	return "invalid credentials"
}

// sleep waits d on the injected clock or until ctx is done.
func (s *Server) sleep(ctx context.Context, d time.Duration) bool {
	t := s.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return true
	case <-ctx.Done():
		return false
	}
}

// admitSession is the sessions path's admission (session.Acceptor.Admit):
// the checks every public request passes, then what the credential fixes
// for the session.
func (s *Server) admitSession(w http.ResponseWriter, r *http.Request) (session.Grant, bool) {
	a, ok := s.admit(w, r, true)
	if !ok {
		return session.Grant{}, false
	}
	p := a.principal
	model, ok := s.requestedModel(r, p.Session.Model)
	if !ok {
		if a.releaseToken != nil {
			a.releaseToken()
		}
		s.refuse(w, http.StatusBadRequest, protocol.CodeModelNotAllowed,
			"the model parameter must name the model the client secret was minted for (at most 64 letters, digits and . _ : -)", 0)
		return session.Grant{}, false
	}
	return session.Grant{
		BinaryAudio: p.Session.AudioMode == protocol.AudioTransportBinary,
		Subprotocol: auth.SubprotocolToEcho(r),
		Identity: session.Identity{
			APIKeyID: p.KeyID, TokenID: p.TokenID,
			ClientIP: a.ip, ClientNet: a.network,
		},
		Claims:  protocol.SessionClaims{Model: p.Session.Model, Voice: p.Session.Voice},
		Model:   model,
		Release: a.releaseToken,
	}, true
}

// requestedModel is the model a session asks for: the URL's model
// parameter (what the OpenAI SDKs send), or the client token's claim. A
// parameter that is no model name, or that differs from the claim, is
// refused: the token fixes the model.
func (s *Server) requestedModel(r *http.Request, claimed string) (string, bool) {
	values := r.URL.Query()["model"]
	switch {
	case len(values) == 0 || values[0] == "":
		return claimed, true
	case len(values) > 1, len(values[0]) > maxModelParam, !isModelName(values[0]):
		return "", false
	case claimed != "" && values[0] != claimed:
		return "", false
	}
	return values[0], true
}

// maxModelParam bounds the session URL's model parameter.
const maxModelParam = 64

// isModelName reports whether s holds only letters, digits and . _ : -.
func isModelName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '.', c == '_', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

func (s *Server) sessionConfig() session.Config {
	c := s.cfg.Sessions
	return session.Config{
		MaxMessageBytes: c.MaxMessageBytes, InboundRate: c.InboundRate, InboundBurst: c.InboundBurst,
		OutboundQueue: c.OutboundQueue, IdleTimeout: c.IdleTimeout, MaxDuration: c.MaxDuration, ResumeNotice: c.ResumeNotice,
		WriteTimeout: c.WriteTimeout, SampleRate: c.SampleRate,
		OutboundQueueBytes: c.OutboundQueueBytes, MaxBufferedAudio: c.MaxBufferedAudio,
	}
}

// clientTokenRequest is the optional body of POST /v1/client_tokens.
type clientTokenRequest struct {
	// ExpiresIn is the lifetime in seconds (default --client-token-ttl).
	ExpiresIn int                `json:"expires_in"`
	Session   auth.SessionClaims `json:"session"`
}

// clientTokenResponse mirrors OpenAI's client secret response.
type clientTokenResponse struct {
	Value     string `json:"value"`
	ExpiresAt int64  `json:"expires_at"`
}

func (s *Server) handleClientToken(w http.ResponseWriter, r *http.Request) {
	principal, ok := s.admitMinter(w, r)
	if !ok {
		return
	}
	var req clientTokenRequest
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxTokenRequest))
	if err == nil && len(body) > 0 {
		err = json.Unmarshal(body, &req)
	}
	if err != nil || req.ExpiresIn < 0 {
		s.refuse(w, http.StatusBadRequest, protocol.CodeInvalidEvent, "body must be a JSON object like {\"expires_in\":60,\"session\":{\"audio\":\"binary\"}}", 0)
		return
	}
	// Compared in seconds first: a huge expires_in would overflow a Duration
	// and wrap around to a short, "valid" lifetime.
	if maxSec := int64(s.authn.Tokens.MaxTTL() / time.Second); int64(req.ExpiresIn) > maxSec {
		s.refuse(w, http.StatusBadRequest, protocol.CodeInvalidEvent,
			"expires_in may be at most "+strconv.FormatInt(maxSec, 10)+" seconds", 0)
		return
	}
	if !s.modelAllowed(req.Session.Model) {
		s.refuse(w, http.StatusBadRequest, protocol.CodeModelNotAllowed, protocol.ModelNotAllowedMessage(req.Session.Model), 0)
		return
	}
	token, expires, ok := s.mint(w, principal, time.Duration(req.ExpiresIn)*time.Second, req.Session)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(clientTokenResponse{Value: token, ExpiresAt: expires.Unix()})
}

// admitMinter is the admission of both mint endpoints: authentication on,
// the checks every public request passes, and an API key (a client token
// cannot mint another).
func (s *Server) admitMinter(w http.ResponseWriter, r *http.Request) (auth.Principal, bool) {
	if s.authn == nil {
		s.refuse(w, http.StatusNotFound, protocol.CodeInvalidEvent, "client tokens need authentication; this server runs with --insecure-no-auth", 0)
		return auth.Principal{}, false
	}
	a, ok := s.admit(w, r, false)
	if !ok {
		return auth.Principal{}, false
	}
	if a.principal.Kind != auth.KindAPIKey {
		s.refuse(w, http.StatusForbidden, protocol.CodeUnauthorized, "a client token cannot mint client tokens; use an API key", 0)
		return auth.Principal{}, false
	}
	return a.principal, true
}

// mint signs a client token for principal, or writes the refusal.
func (s *Server) mint(w http.ResponseWriter, principal auth.Principal, ttl time.Duration, claims auth.SessionClaims) (string, time.Time, bool) {
	token, expires, err := s.authn.Tokens.Mint(ttl, auth.Claims{KeyID: principal.KeyID, Session: claims})
	switch {
	case errors.Is(err, auth.ErrNoSigningKey):
		// Logged once a minute at most: every mint fails alike until the
		// key file is fixed.
		if now := s.clock.Now().UnixNano(); now-s.noKeyLogged.Load() >= int64(time.Minute) {
			s.noKeyLogged.Store(now)
			s.log.Error(err, "Cannot mint a client token")
		}
		s.refuse(w, http.StatusServiceUnavailable, protocol.CodeInternal, "no client-token signing key is active on this server", 0)
		return "", time.Time{}, false
	case err != nil:
		s.refuse(w, http.StatusBadRequest, protocol.CodeInvalidEvent, err.Error(), 0)
		return "", time.Time{}, false
	}
	s.metrics.ClientTokensMinted.Inc()
	return token, expires, true
}

// httpErrorLog routes net/http's own error log through the structured logger.
func httpErrorLog(l logr.Logger) *log.Logger {
	return log.New(logWriter{l.WithName("http")}, "", 0)
}

type logWriter struct{ log logr.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.log.V(1).Info(string(p))
	return len(p), nil
}
