package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"k8s.io/utils/clock"
)

// Client token format and limits.
const (
	// TokenPrefix marks a client token; the request parser tells tokens
	// from API keys by it.
	TokenPrefix = "vgw_ct_"
	// MaxTokenLen is the longest token Verify looks at; longer input is
	// rejected before any decoding. Mint refuses claims that do not fit.
	MaxTokenLen = 1024
	// DefaultTokenTTL is the lifetime of a token minted with ttl 0: long
	// enough for a page to fetch a token and open its socket, short enough
	// that a leaked one is soon useless.
	DefaultTokenTTL = 60 * time.Second
	// DefaultMaxTokenTTL is the longest lifetime Mint grants unless
	// configured otherwise.
	DefaultMaxTokenTTL = 10 * time.Minute
	// MaxTokenTTLLimit bounds the configurable maximum: these are
	// connection tickets, not sessions.
	MaxTokenTTLLimit = 24 * time.Hour
	// MinSecretLen is the shortest HMAC secret accepted (256 bits).
	MinSecretLen = 32
	// IssuedAtSkew is how far in the future a token's issued-at may lie;
	// the replica that minted it may run a little ahead of this one.
	IssuedAtSkew = 5 * time.Second
)

const (
	tokenVersion      = 1
	tokenIDBytes      = 12 // 96 random bits: collisions are not a concern at any mint rate
	maxSecretFileSize = 64 << 10
	maxClaimLen       = 64
)

var (
	b64 = base64.RawURLEncoding.Strict()
	// macEncodedLen is the exact length of the encoded MAC; anything else
	// is malformed without decoding.
	macEncodedLen = b64.EncodedLen(sha256.Size)
	tokenIDLen    = b64.EncodedLen(tokenIDBytes)
)

var (
	// ErrInvalidTTL is returned by Mint for a lifetime outside (0, max].
	ErrInvalidTTL = errors.New("invalid token lifetime")
	// ErrInvalidClaims is returned by Mint for claims it will not sign.
	ErrInvalidClaims = errors.New("invalid token claims")
)

// SessionClaims are settings a token fixes for the session it opens, chosen
// by whoever minted it, so that a page cannot pick a costlier model or a
// different audio path than the backend allowed. Values are short
// identifiers (letters, digits, '.', '_', ':', '-', at most 64 bytes); their
// meaning belongs to the session package.
type SessionClaims struct {
	AudioMode string `json:"audio,omitempty"`
	Model     string `json:"model,omitempty"`
	Voice     string `json:"voice,omitempty"`
}

func (s SessionClaims) validate() error {
	for _, f := range []struct{ name, value string }{
		{"audio mode", s.AudioMode}, {"model", s.Model}, {"voice", s.Voice},
	} {
		if len(f.value) > maxClaimLen {
			return fmt.Errorf("%w: session %s longer than %d bytes", ErrInvalidClaims, f.name, maxClaimLen)
		}
		if !isIdentifier(f.value) {
			return fmt.Errorf("%w: session %s may hold only letters, digits and . _ : -", ErrInvalidClaims, f.name)
		}
	}
	return nil
}

// Claims are what a token asserts. Mint sets ID, IssuedAt and ExpiresAt and
// ignores any values passed in them.
type Claims struct {
	ID        string    // 96 random bits, base64url; names the token in logs
	IssuedAt  time.Time // whole seconds
	ExpiresAt time.Time // whole seconds
	// KeyID names the API key that minted the token (see KeyID). When set,
	// the Authenticator rejects the token once that key leaves the key
	// file, so revoking a key revokes its tokens too.
	KeyID   string
	Session SessionClaims
}

// tokenPayload is the signed JSON; short names keep tokens short.
type tokenPayload struct {
	Version   int            `json:"v"`
	ID        string         `json:"jti"`
	IssuedAt  int64          `json:"iat"`
	ExpiresAt int64          `json:"exp"`
	KeyID     string         `json:"kid,omitempty"`
	Session   *SessionClaims `json:"ses,omitempty"`
}

// TokenIssuer mints and verifies client tokens with one HMAC secret.
//
// Client tokens let a browser, which cannot set an Authorization header on a
// WebSocket, connect without ever holding an API key: the customer's backend
// presents its API key to the gateway's mint endpoint, gets a short-lived
// token and hands that to the page — the flow of OpenAI's ephemeral client
// secrets. The format is
//
//	vgw_ct_<base64url(payload)>.<base64url(HMAC-SHA256(secret, "vgw_ct_" + base64url(payload)))>
//
// with unpadded base64url and a JSON payload (version, token ID, issued-at
// and expires-at in Unix seconds, minting key ID, session settings). The MAC
// covers the text exactly as received, so Verify authenticates a token
// before it decodes the payload, and the MAC is decoded strictly so that no
// second spelling of a token verifies. A token is checked once, when a
// session starts; an established session is not cut when it expires.
//
// Every replica that should accept a token must hold the same secret: mount
// one Secret file (LoadSecretFile) in all pods and tokens work across
// replicas and restarts. Without one, the server generates a random secret
// at start (GenerateSecret); tokens then work only on the pod that minted
// them and die with its process, which is fine for a single instance and
// for development. Replacing the secret invalidates tokens not yet used,
// which with lifetimes of a minute or so costs a client one retry.
type TokenIssuer struct {
	secret     []byte
	clk        clock.PassiveClock
	defaultTTL time.Duration
	maxTTL     time.Duration
	// random supplies token IDs; tests replace it to make tokens
	// reproducible across the processes of a fuzzing run.
	random io.Reader
}

// TokenOption configures a TokenIssuer.
type TokenOption func(*TokenIssuer)

// WithDefaultTTL sets the lifetime of tokens minted with ttl 0.
func WithDefaultTTL(d time.Duration) TokenOption {
	return func(i *TokenIssuer) { i.defaultTTL = d }
}

// WithMaxTTL sets the longest lifetime Mint grants.
func WithMaxTTL(d time.Duration) TokenOption {
	return func(i *TokenIssuer) { i.maxTTL = d }
}

// NewTokenIssuer builds an issuer from a secret of at least MinSecretLen
// bytes, which it copies. A nil clk means the real clock.
func NewTokenIssuer(secret []byte, clk clock.PassiveClock, opts ...TokenOption) (*TokenIssuer, error) {
	if len(secret) < MinSecretLen {
		return nil, fmt.Errorf("client token secret must be at least %d bytes, got %d", MinSecretLen, len(secret))
	}
	if clk == nil {
		clk = clock.RealClock{}
	}
	i := &TokenIssuer{
		secret:     append([]byte(nil), secret...),
		clk:        clk,
		defaultTTL: DefaultTokenTTL,
		maxTTL:     DefaultMaxTokenTTL,
		random:     rand.Reader,
	}
	for _, opt := range opts {
		opt(i)
	}
	switch {
	case i.maxTTL < time.Second || i.maxTTL > MaxTokenTTLLimit:
		return nil, fmt.Errorf("maximum client token lifetime %s must be between 1s and %s", i.maxTTL, MaxTokenTTLLimit)
	case i.defaultTTL < time.Second || i.defaultTTL > i.maxTTL:
		return nil, fmt.Errorf("default client token lifetime %s must be between 1s and the maximum %s", i.defaultTTL, i.maxTTL)
	}
	return i, nil
}

// DefaultTTL is the lifetime of tokens minted with ttl 0.
func (i *TokenIssuer) DefaultTTL() time.Duration { return i.defaultTTL }

// MaxTTL is the longest lifetime Mint grants.
func (i *TokenIssuer) MaxTTL() time.Duration { return i.maxTTL }

// GenerateSecret returns MinSecretLen random bytes for an issuer whose
// tokens need not outlive the process or leave the pod.
func GenerateSecret() ([]byte, error) {
	secret := make([]byte, MinSecretLen)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	return secret, nil
}

// LoadSecretFile reads a shared token secret, e.g. from a mounted Secret.
// Surrounding whitespace is trimmed because such files are usually written
// with a trailing newline; generate the content as text, for example with
// `openssl rand -base64 48`.
func LoadSecretFile(path string) ([]byte, error) {
	data, err := readBounded(path, maxSecretFileSize)
	if err != nil {
		return nil, fmt.Errorf("token secret file: %w", err)
	}
	secret := []byte(strings.TrimSpace(string(data)))
	if len(secret) < MinSecretLen {
		return nil, fmt.Errorf("token secret file %s: secret must be at least %d bytes, got %d", path, MinSecretLen, len(secret))
	}
	return secret, nil
}

// Mint signs claims into a token that expires ttl from now (ttl 0 means
// the default lifetime); expiresAt is what the mint endpoint reports to the
// client. The lifetime is rounded up to a whole second.
func (i *TokenIssuer) Mint(ttl time.Duration, claims Claims) (token string, expiresAt time.Time, err error) {
	if ttl == 0 {
		ttl = i.defaultTTL
	}
	if ttl < 0 || ttl > i.maxTTL {
		return "", time.Time{}, fmt.Errorf("%w: %s is not within (0, %s]", ErrInvalidTTL, ttl, i.maxTTL)
	}
	if claims.KeyID != "" && !isKeyID(claims.KeyID) {
		return "", time.Time{}, fmt.Errorf("%w: key ID must be %d lowercase hex characters", ErrInvalidClaims, keyIDLen)
	}
	if err := claims.Session.validate(); err != nil {
		return "", time.Time{}, err
	}

	var id [tokenIDBytes]byte
	if _, err := io.ReadFull(i.random, id[:]); err != nil {
		return "", time.Time{}, err
	}
	now := i.clk.Now()
	expires := now.Add(ttl)
	payload := tokenPayload{
		Version:   tokenVersion,
		ID:        b64.EncodeToString(id[:]),
		IssuedAt:  now.Unix(),
		ExpiresAt: expires.Unix(),
		KeyID:     claims.KeyID,
	}
	if !expires.Equal(time.Unix(payload.ExpiresAt, 0)) {
		payload.ExpiresAt++ // round up: never shorter than asked
	}
	if claims.Session != (SessionClaims{}) {
		payload.Session = &claims.Session
	}
	body, err := json.Marshal(payload)
	if err != nil {
		return "", time.Time{}, err
	}

	var sb strings.Builder
	sb.Grow(len(TokenPrefix) + b64.EncodedLen(len(body)) + 1 + macEncodedLen)
	sb.WriteString(TokenPrefix)
	sb.WriteString(b64.EncodeToString(body))
	mac := i.sign(sb.String())
	sb.WriteByte('.')
	sb.WriteString(b64.EncodeToString(mac))
	token = sb.String()
	if len(token) > MaxTokenLen {
		return "", time.Time{}, fmt.Errorf("%w: token would exceed %d bytes", ErrInvalidClaims, MaxTokenLen)
	}
	return token, time.Unix(payload.ExpiresAt, 0), nil
}

func (i *TokenIssuer) sign(signed string) []byte {
	h := hmac.New(sha256.New, i.secret)
	h.Write([]byte(signed))
	return h.Sum(nil)
}

// Verify checks a token and returns its claims. Errors wrap
// ErrMalformedCredentials (not shaped like a token), ErrInvalidCredentials
// (wrong MAC: forged, tampered or minted with another secret; issued in the
// future) or ErrExpiredToken; their messages never contain the token.
func (i *TokenIssuer) Verify(token string) (Claims, error) {
	// Bound the work before touching the content.
	if len(token) > MaxTokenLen {
		return Claims{}, fmt.Errorf("%w: client token longer than %d bytes", ErrMalformedCredentials, MaxTokenLen)
	}
	if !strings.HasPrefix(token, TokenPrefix) {
		return Claims{}, fmt.Errorf("%w: client token must start with %q", ErrMalformedCredentials, TokenPrefix)
	}
	dot := strings.LastIndexByte(token, '.')
	if dot <= len(TokenPrefix) || len(token)-dot-1 != macEncodedLen {
		return Claims{}, fmt.Errorf("%w: client token is not <payload>.<signature>", ErrMalformedCredentials)
	}
	signed, encodedMAC := token[:dot], token[dot+1:]
	var mac [sha256.Size]byte
	if n, err := b64.Decode(mac[:], []byte(encodedMAC)); err != nil || n != sha256.Size {
		return Claims{}, fmt.Errorf("%w: client token signature is not base64url", ErrMalformedCredentials)
	}
	if !hmac.Equal(mac[:], i.sign(signed)) {
		return Claims{}, fmt.Errorf("%w: client token signature does not match", ErrInvalidCredentials)
	}

	// From here on the payload is one this issuer's secret signed, so a
	// failure below means a bug or a secret shared with something else,
	// never tampering.
	body, err := b64.DecodeString(signed[len(TokenPrefix):])
	if err != nil {
		return Claims{}, fmt.Errorf("%w: client token payload is not base64url", ErrMalformedCredentials)
	}
	var payload tokenPayload
	if err := json.Unmarshal(body, &payload); err != nil {
		return Claims{}, fmt.Errorf("%w: client token payload is not valid", ErrMalformedCredentials)
	}
	if payload.Version != tokenVersion {
		return Claims{}, fmt.Errorf("%w: client token version %d is not supported", ErrInvalidCredentials, payload.Version)
	}
	if len(payload.ID) != tokenIDLen || payload.ExpiresAt <= payload.IssuedAt {
		return Claims{}, fmt.Errorf("%w: client token payload is not valid", ErrMalformedCredentials)
	}

	now := i.clk.Now()
	issuedAt := time.Unix(payload.IssuedAt, 0)
	expiresAt := time.Unix(payload.ExpiresAt, 0)
	if issuedAt.After(now.Add(IssuedAtSkew)) {
		return Claims{}, fmt.Errorf("%w: client token issued in the future; check the clocks of the gateway pods", ErrInvalidCredentials)
	}
	if !now.Before(expiresAt) {
		return Claims{}, fmt.Errorf("%w: client token expired; mint a new one for each connection", ErrExpiredToken)
	}
	claims := Claims{
		ID:        payload.ID,
		IssuedAt:  issuedAt,
		ExpiresAt: expiresAt,
		KeyID:     payload.KeyID,
	}
	if payload.Session != nil {
		claims.Session = *payload.Session
	}
	return claims, nil
}

// isIdentifier reports whether s holds only letters, digits and . _ : -.
func isIdentifier(s string) bool {
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

func isKeyID(s string) bool {
	if len(s) != keyIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
