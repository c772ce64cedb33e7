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
	"slices"
	"strings"
	"time"

	"k8s.io/utils/clock"

	"github.com/voicegateway/voicegateway/server/fleet"
)

// Client token format and limits.
const (
	// TokenPrefix marks a client token; the request parser tells tokens
	// from API keys by it. It starts with ek_, the prefix of OpenAI's
	// ephemeral keys, which the official SDKs allow in a browser without
	// dangerouslyAllowBrowser.
	TokenPrefix = "ek_vgw_"
	// LegacyTokenPrefix marks the tokens of earlier releases; they are
	// still verified, so that a token minted by a pod of the previous
	// release during a rollout opens a session on a new one.
	LegacyTokenPrefix = "vgw_ct_"
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
	// IssuedAtSkew is how far in the future a token's issued-at may lie;
	// the replica that minted it may run a little ahead of this one.
	IssuedAtSkew = 5 * time.Second
)

const (
	// tokenVersion 2 carries the signing key id in front of the payload;
	// version 1 tokens (one secret per process) are no longer accepted.
	tokenVersion = 2
	tokenIDBytes = 12 // 96 random bits: collisions are not a concern at any mint rate
	maxClaimLen  = 64
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

// Claims are what a token asserts. Mint sets ID, IssuedAt, ExpiresAt and
// SigningKeyID and ignores any values passed in them.
type Claims struct {
	ID        string    // 96 random bits, base64url; names the token in logs
	IssuedAt  time.Time // whole seconds
	ExpiresAt time.Time // whole seconds
	// KeyID names the API key that minted the token (see KeyID). When set,
	// the Authenticator rejects the token once that key leaves the key
	// file, so revoking a key revokes its tokens too.
	KeyID string
	// SigningKeyID names the fleet signing key that signed the token.
	SigningKeyID string
	Session      SessionClaims
}

// tokenPayload is the signed JSON; short names keep tokens short.
type tokenPayload struct {
	Version   int            `json:"v"`
	ID        string         `json:"jti"`
	IssuedAt  int64          `json:"iat"`
	ExpiresAt int64          `json:"exp"`
	KeyID     string         `json:"akid,omitempty"`
	Session   *SessionClaims `json:"ses,omitempty"`
}

// signingKey is one decoded key of a Keyring.
type signingKey struct {
	id     string
	secret []byte
	fleet.TokenKey
}

// Keyring is an immutable set of client-token signing keys, decoded from a
// fleet Secret's token-keys.json (or made for one process alone). Which key
// signs and which keys verify depends on the time: see fleet.TokenKey.
type Keyring struct {
	keys  []signingKey
	ids   []string
	times fleet.TokenKeys // the keys' times, for Signing
}

// NewKeyring decodes validated keys. It copies what it keeps.
func NewKeyring(keys fleet.TokenKeys) (*Keyring, error) {
	if err := keys.Validate(); err != nil {
		return nil, err
	}
	r := &Keyring{}
	for _, k := range keys.Keys {
		secret, err := k.SecretBytes()
		if err != nil {
			return nil, err // Validate has already checked it
		}
		// Only the decoded bytes are kept; the times travel without the
		// encoded secret, so nothing that prints them can show it.
		k.Secret = ""
		r.keys = append(r.keys, signingKey{id: k.ID, secret: secret, TokenKey: k})
		r.times.Keys = append(r.times.Keys, k)
		r.ids = append(r.ids, k.ID)
	}
	return r, nil
}

// ParseKeyring reads a token-keys.json file; it is the parse function of
// the SecretFile that follows the mounted fleet Secret.
func ParseKeyring(data []byte) (*Keyring, error) {
	keys, err := fleet.ParseTokenKeys(data)
	if err != nil {
		return nil, err
	}
	return NewKeyring(keys)
}

// LocalKeyring makes a keyring of one random key for a process that has no
// fleet Secret: its tokens work only on that process, until it exits.
func LocalKeyring(now time.Time) (*Keyring, error) {
	key, err := fleet.NewTokenKey(rand.Reader, now, nil)
	if err != nil {
		return nil, err
	}
	key.ID = "local"
	return NewKeyring(fleet.TokenKeys{Keys: []fleet.TokenKey{key}})
}

// Value returns the keyring itself: a Keyring is its own fixed KeySource.
func (r *Keyring) Value() *Keyring { return r }

// IDs lists the key ids, in file order.
func (r *Keyring) IDs() []string { return slices.Clone(r.ids) }

func (r *Keyring) signing(now time.Time) (*signingKey, bool) {
	k, ok := r.times.Signing(now)
	if !ok {
		return nil, false
	}
	return r.lookup(k.ID), true
}

func (r *Keyring) lookup(id string) *signingKey {
	for i := range r.keys {
		if r.keys[i].id == id {
			return &r.keys[i]
		}
	}
	return nil
}

// KeySource supplies the current keyring; a SecretFile[*Keyring] following
// the mounted fleet Secret is one, a fixed *Keyring another.
type KeySource interface {
	Value() *Keyring
}

// TokenIssuer mints and verifies client tokens with the keys of a keyring.
//
// Client tokens let a browser, which cannot set an Authorization header on a
// WebSocket, connect without ever holding an API key: the customer's backend
// presents its API key to the gateway's mint endpoint, gets a short-lived
// token and hands that to the page — the flow of OpenAI's ephemeral client
// secrets. The format is
//
//	ek_vgw_<key id>.<base64url(payload)>.<base64url(HMAC-SHA256(key, "ek_vgw_<key id>." + base64url(payload)))>
//
// (vgw_ct_ in place of ek_vgw_ for tokens of earlier releases, still verified)
//
// with unpadded base64url and a JSON payload (version, token ID, issued-at
// and expires-at in Unix seconds, minting API key ID, session settings).
// The key id names the fleet signing key, so that any replica holding the
// fleet Secret finds the key that verifies a token another replica minted,
// through a rotation too. The MAC covers the text exactly as received, so
// Verify authenticates a token before it decodes the payload, and the MAC is
// decoded strictly so that no second spelling of a token verifies. A token
// is checked once, when a session starts; an established session is not
// cut when it expires.
type TokenIssuer struct {
	keys       KeySource
	clk        clock.PassiveClock
	defaultTTL time.Duration
	maxTTL     time.Duration
	// random supplies token IDs; tests replace it to make tokens
	// reproducible across the processes of a fuzzing run.
	random io.Reader
	// refresh, when set, is asked to read the keys again when a token
	// names a key the keyring lacks; it reports whether they changed.
	refresh func() bool
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

// WithKeyRefresh makes Verify ask refresh for the keys again when a token
// names a key this process does not hold: another replica may have read a
// rotated Secret first. refresh must bound its own cost (SecretFile.Refresh
// reads at most once per interval).
func WithKeyRefresh(refresh func() bool) TokenOption {
	return func(i *TokenIssuer) { i.refresh = refresh }
}

// NewTokenIssuer builds an issuer over a key source. A nil clk means the
// real clock.
func NewTokenIssuer(keys KeySource, clk clock.PassiveClock, opts ...TokenOption) (*TokenIssuer, error) {
	if keys == nil || keys.Value() == nil {
		return nil, errors.New("client tokens need a keyring")
	}
	if clk == nil {
		clk = clock.RealClock{}
	}
	i := &TokenIssuer{
		keys:       keys,
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

// ErrNoSigningKey is returned by Mint when no key of the keyring may sign
// now, which only a hand-written key file whose keys all start in the
// future or have ended can cause.
var ErrNoSigningKey = errors.New("no client-token signing key is active; check token-keys.json of the fleet Secret")

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
	now := i.clk.Now()
	key, ok := i.keys.Value().signing(now)
	if !ok {
		return "", time.Time{}, ErrNoSigningKey
	}

	var id [tokenIDBytes]byte
	if _, err := io.ReadFull(i.random, id[:]); err != nil {
		return "", time.Time{}, err
	}
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
	sb.Grow(len(TokenPrefix) + len(key.id) + 1 + b64.EncodedLen(len(body)) + 1 + macEncodedLen)
	sb.WriteString(TokenPrefix)
	sb.WriteString(key.id)
	sb.WriteByte('.')
	sb.WriteString(b64.EncodeToString(body))
	mac := sign(key.secret, sb.String())
	sb.WriteByte('.')
	sb.WriteString(b64.EncodeToString(mac))
	token = sb.String()
	if len(token) > MaxTokenLen {
		return "", time.Time{}, fmt.Errorf("%w: token would exceed %d bytes", ErrInvalidClaims, MaxTokenLen)
	}
	return token, time.Unix(payload.ExpiresAt, 0), nil
}

func sign(secret []byte, signed string) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(signed))
	return h.Sum(nil)
}

// SigningKeyID returns the key id a token names, without verifying
// anything, or "" when it names none: what a test or a log of a refused
// token may show (the id is not secret).
func SigningKeyID(token string) string {
	prefix := tokenPrefix(token)
	if prefix == "" {
		return ""
	}
	rest := token[len(prefix):]
	id, _, ok := strings.Cut(rest, ".")
	if !ok || !fleet.ValidKeyID(id) {
		return ""
	}
	return id
}

// Verify checks a token and returns its claims. Errors wrap
// ErrMalformedCredentials (not shaped like a token), ErrInvalidCredentials
// (wrong MAC: forged, tampered or minted with another secret; an unknown or
// retired signing key; issued in the future) or ErrExpiredToken; their
// messages never contain the token.
func (i *TokenIssuer) Verify(token string) (Claims, error) {
	// Bound the work before touching the content.
	if len(token) > MaxTokenLen {
		return Claims{}, fmt.Errorf("%w: client token longer than %d bytes", ErrMalformedCredentials, MaxTokenLen)
	}
	prefix := tokenPrefix(token)
	if prefix == "" {
		return Claims{}, fmt.Errorf("%w: client token must start with %q", ErrMalformedCredentials, TokenPrefix)
	}
	dot := strings.LastIndexByte(token, '.')
	if dot <= len(prefix) || len(token)-dot-1 != macEncodedLen {
		return Claims{}, fmt.Errorf("%w: client token is not <key id>.<payload>.<signature>", ErrMalformedCredentials)
	}
	signed, encodedMAC := token[:dot], token[dot+1:]
	keyID, encodedPayload, ok := strings.Cut(signed[len(prefix):], ".")
	if !ok || !fleet.ValidKeyID(keyID) || encodedPayload == "" {
		return Claims{}, fmt.Errorf("%w: client token is not <key id>.<payload>.<signature>", ErrMalformedCredentials)
	}
	var mac [sha256.Size]byte
	if n, err := b64.Decode(mac[:], []byte(encodedMAC)); err != nil || n != sha256.Size {
		return Claims{}, fmt.Errorf("%w: client token signature is not base64url", ErrMalformedCredentials)
	}
	now := i.clk.Now()
	key := i.keys.Value().lookup(keyID)
	if key == nil && i.refresh != nil && i.refresh() {
		key = i.keys.Value().lookup(keyID)
	}
	switch {
	case key == nil:
		return Claims{}, fmt.Errorf("%w: client token signed with a key this gateway does not hold", ErrInvalidCredentials)
	case !key.Verifies(now):
		return Claims{}, fmt.Errorf("%w: client token signed with a retired key; mint a new one", ErrInvalidCredentials)
	}
	if !hmac.Equal(mac[:], sign(key.secret, signed)) {
		return Claims{}, fmt.Errorf("%w: client token signature does not match", ErrInvalidCredentials)
	}

	// From here on the payload is one a fleet key signed, so a failure
	// below means a bug or a key shared with something else, never
	// tampering.
	body, err := b64.DecodeString(encodedPayload)
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

	issuedAt := time.Unix(payload.IssuedAt, 0)
	expiresAt := time.Unix(payload.ExpiresAt, 0)
	if issuedAt.After(now.Add(IssuedAtSkew)) {
		return Claims{}, fmt.Errorf("%w: client token issued in the future; check the clocks of the gateway pods", ErrInvalidCredentials)
	}
	if !now.Before(expiresAt) {
		return Claims{}, fmt.Errorf("%w: client token expired; mint a new one for each connection", ErrExpiredToken)
	}
	claims := Claims{
		ID:           payload.ID,
		IssuedAt:     issuedAt,
		ExpiresAt:    expiresAt,
		KeyID:        payload.KeyID,
		SigningKeyID: keyID,
	}
	if payload.Session != nil {
		claims.Session = *payload.Session
	}
	return claims, nil
}

// tokenPrefix returns the client-token prefix value starts with, or "".
func tokenPrefix(value string) string {
	switch {
	case strings.HasPrefix(value, TokenPrefix):
		return TokenPrefix
	case strings.HasPrefix(value, LegacyTokenPrefix):
		return LegacyTokenPrefix
	}
	return ""
}

// IsClientToken reports whether a credential is shaped like a client
// token (by its prefix only; Verify decides whether it is one).
func IsClientToken(value string) bool { return tokenPrefix(value) != "" }

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
