// Package fleet defines the fleet Secret: the keys that every replica of one
// VoiceGateway shares, so that the replicas act as one service. The operator
// generates, rotates and prunes it; the voice server reads it from a mounted
// directory (--fleet-secret-dir); a user who brings their own Secret writes
// the same files (`voice-server fleet-secret` prints a fresh set).
//
// The Secret has one data key per file:
//
//	token-keys.json  the keys that sign client tokens, each with a key id
//	admin-token      the bearer token of the admin endpoints
//	fleet-key        32 random bytes, base64: the fleet's own encryption key
//	api-keys         API keys, one per line (only when the operator made them)
//
// The package holds the format and pure functions over it (parse, generate,
// rotate, prune), so that the operator and the server cannot disagree about
// what a key file means, and so that rotation is tested without a cluster.
package fleet

import (
	"bytes"
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Data keys of the fleet Secret, which are also the file names under the
// directory it is mounted at.
const (
	TokenKeysFile  = "token-keys.json"
	AdminTokenFile = "admin-token"
	FleetKeyFile   = "fleet-key"
	APIKeysFile    = "api-keys"
)

// Bounds of the format. Everything read from the Secret is checked against
// them before it is used.
const (
	// MaxFileSize bounds every file of the fleet Secret.
	MaxFileSize = 64 << 10
	// MaxTokenKeys bounds the keys of token-keys.json: the one signing,
	// one waiting to sign, and the replaced ones that still verify — one
	// per rotation in the last Retain, so rotating every few minutes still
	// fits.
	MaxTokenKeys = 16
	// MinTokenSecretBytes and MaxTokenSecretBytes bound a signing key's
	// decoded secret (HMAC-SHA256 gains nothing beyond its block size).
	MinTokenSecretBytes = 32
	MaxTokenSecretBytes = 64
	// MaxKeyIDLen bounds a key id: lowercase letters and digits.
	MaxKeyIDLen = 16
	// MinAdminTokenLen and MaxAdminTokenLen bound the admin token.
	MinAdminTokenLen = 32
	MaxAdminTokenLen = 256
	// FleetKeyBytes is the size of the fleet encryption key (AES-256).
	FleetKeyBytes = 32
)

// Prefixes of the generated credentials, so that a leaked one is recognised
// by what it is (and by secret scanners).
const (
	AdminTokenPrefix = "vgw_admin_"
	APIKeyPrefix     = "vgw_sk_"
)

// b64 is the encoding of token signing secrets in token-keys.json.
var b64 = base64.RawURLEncoding.Strict()

// TokenKey is one client-token signing key.
type TokenKey struct {
	// ID names the key in every token it signs, so any replica finds the
	// key that verifies it: 1 to 16 lowercase letters and digits.
	ID string `json:"id"`
	// Secret is the HMAC key, 32 to 64 random bytes as unpadded base64url.
	Secret string `json:"secret"`
	// Created is when the key was made; a rotation period counts from it.
	Created time.Time `json:"created"`
	// SignFrom is when replicas may start signing with the key. A new key
	// is first known to every replica for verifying, and only then used
	// for signing, because mounted Secrets reach the pods of a fleet over
	// a minute or more: a token signed with a key some replica has not yet
	// seen would be refused there. Absent: from the start.
	SignFrom *time.Time `json:"sign_from,omitempty"`
	// VerifyUntil is when the key stops verifying tokens, set on a key once
	// a newer one replaces it: late enough that every token it signed has
	// expired. Absent: for as long as it is in the file.
	VerifyUntil *time.Time `json:"verify_until,omitempty"`
}

// String keeps the secret out of anything that formats a key.
func (k TokenKey) String() string {
	return fmt.Sprintf("TokenKey{ID:%s Secret:[redacted] Created:%s SignFrom:%v VerifyUntil:%v}",
		k.ID, k.Created.Format(time.RFC3339), k.SignFrom, k.VerifyUntil)
}

// GoString covers %#v, which does not use String.
func (k TokenKey) GoString() string { return k.String() }

// MarshalLog keeps the secret out of logr key/value pairs.
func (k TokenKey) MarshalLog() any {
	return struct {
		ID                    string
		Created               time.Time
		SignFrom, VerifyUntil *time.Time
	}{k.ID, k.Created, k.SignFrom, k.VerifyUntil}
}

// TokenKeys is the content of token-keys.json.
type TokenKeys struct {
	Keys []TokenKey `json:"keys"`
}

// ErrInvalid wraps every error about the content of a fleet Secret file.
// Its messages name the file and the problem, never a secret.
var ErrInvalid = errors.New("invalid fleet secret")

func invalid(file, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalid, file, fmt.Sprintf(format, args...))
}

// ParseTokenKeys reads and checks token-keys.json: strict JSON (no unknown
// fields, nothing after the object), 1 to MaxTokenKeys keys with distinct,
// well-formed ids and secrets of the right size.
func ParseTokenKeys(data []byte) (TokenKeys, error) {
	if len(data) > MaxFileSize {
		return TokenKeys{}, invalid(TokenKeysFile, "larger than %d bytes", MaxFileSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var keys TokenKeys
	if err := dec.Decode(&keys); err != nil {
		return TokenKeys{}, invalid(TokenKeysFile, "not a JSON object like {\"keys\":[{\"id\":...,\"secret\":...}]}: %s", jsonProblem(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return TokenKeys{}, invalid(TokenKeysFile, "unexpected content after the JSON object")
	}
	if err := keys.Validate(); err != nil {
		return TokenKeys{}, err
	}
	return keys, nil
}

// jsonProblem describes a decoding error without quoting the input, which
// may hold a secret: encoding/json's syntax errors name an offset only, but
// its type errors may quote a value.
func jsonProblem(err error) string {
	var syntax *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return fmt.Sprintf("syntax error at byte %d", syntax.Offset)
	case errors.As(err, &typeErr):
		return fmt.Sprintf("field %q has the wrong type", typeErr.Field)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return strings.TrimPrefix(err.Error(), "json: ")
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "the file is empty or cut short"
	default:
		return "malformed"
	}
}

// Validate checks the keys as ParseTokenKeys does.
func (k TokenKeys) Validate() error {
	switch {
	case len(k.Keys) == 0:
		return invalid(TokenKeysFile, "holds no key")
	case len(k.Keys) > MaxTokenKeys:
		return invalid(TokenKeysFile, "holds %d keys, at most %d are allowed", len(k.Keys), MaxTokenKeys)
	}
	seen := map[string]bool{}
	for i, key := range k.Keys {
		if !ValidKeyID(key.ID) {
			return invalid(TokenKeysFile, "key %d: id must be 1 to %d lowercase letters and digits", i+1, MaxKeyIDLen)
		}
		if seen[key.ID] {
			return invalid(TokenKeysFile, "key id %q appears twice", key.ID)
		}
		seen[key.ID] = true
		if _, err := key.SecretBytes(); err != nil {
			return invalid(TokenKeysFile, "key %q: %v", key.ID, err)
		}
		if key.SignFrom != nil && key.VerifyUntil != nil && !key.VerifyUntil.After(*key.SignFrom) {
			return invalid(TokenKeysFile, "key %q: verify_until must be after sign_from", key.ID)
		}
	}
	return nil
}

// SecretBytes decodes the key's secret.
func (k TokenKey) SecretBytes() ([]byte, error) {
	if len(k.Secret) > b64.EncodedLen(MaxTokenSecretBytes) {
		return nil, fmt.Errorf("secret longer than %d bytes", MaxTokenSecretBytes)
	}
	secret, err := b64.DecodeString(k.Secret)
	switch {
	case err != nil:
		return nil, errors.New("secret is not unpadded base64url")
	case len(secret) < MinTokenSecretBytes:
		return nil, fmt.Errorf("secret must be at least %d bytes, got %d", MinTokenSecretBytes, len(secret))
	}
	return secret, nil
}

// ValidKeyID reports whether id is 1 to MaxKeyIDLen lowercase letters and
// digits.
func ValidKeyID(id string) bool {
	if id == "" || len(id) > MaxKeyIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// Verifies reports whether the key verifies tokens at now.
func (k TokenKey) Verifies(now time.Time) bool {
	return k.VerifyUntil == nil || now.Before(*k.VerifyUntil)
}

// Signs reports whether the key may sign tokens at now.
func (k TokenKey) Signs(now time.Time) bool {
	return k.Verifies(now) && (k.SignFrom == nil || !now.Before(*k.SignFrom))
}

// Signing returns the key that signs at now: of the keys that may sign, the
// one whose SignFrom is latest (a key without one counts as the earliest),
// the first listed on a tie. ok is false when no key may sign, which a
// file written by the operator never produces.
func (k TokenKeys) Signing(now time.Time) (key TokenKey, ok bool) {
	for _, candidate := range k.Keys {
		if !candidate.Signs(now) {
			continue
		}
		if !ok || signFrom(candidate).After(signFrom(key)) {
			key, ok = candidate, true
		}
	}
	return key, ok
}

func signFrom(k TokenKey) time.Time {
	if k.SignFrom == nil {
		return time.Time{}
	}
	return *k.SignFrom
}

// Newest returns the most recently created key.
func (k TokenKeys) Newest() TokenKey {
	newest := k.Keys[0]
	for _, key := range k.Keys[1:] {
		if key.Created.After(newest.Created) {
			newest = key
		}
	}
	return newest
}

// Marshal renders the keys as token-keys.json, indented so that a user who
// reads the Secret sees one field per line.
func (k TokenKeys) Marshal() ([]byte, error) {
	return json.MarshalIndent(k, "", "  ")
}

// NewTokenKey makes a signing key with a random id and secret, created at
// now and signing from signFrom (nil: at once). A nil random means
// crypto/rand.
func NewTokenKey(random io.Reader, now time.Time, signFrom *time.Time) (TokenKey, error) {
	if random == nil {
		random = rand.Reader
	}
	var id [5]byte // 8 base32 characters
	if _, err := io.ReadFull(random, id[:]); err != nil {
		return TokenKey{}, err
	}
	secret := make([]byte, MinTokenSecretBytes)
	if _, err := io.ReadFull(random, secret); err != nil {
		return TokenKey{}, err
	}
	return TokenKey{
		ID:       strings.ToLower(keyIDEncoding.EncodeToString(id[:])),
		Secret:   b64.EncodeToString(secret),
		Created:  now.UTC().Truncate(time.Second),
		SignFrom: utcPtr(signFrom),
	}, nil
}

// Rotation times a rotation of the signing keys.
type Rotation struct {
	// Activation is how long a new key is only verified before it signs:
	// longer than it takes a changed Secret to reach every pod.
	Activation time.Duration
	// Retain is how long a replaced key keeps verifying after the new one
	// starts signing: at least the longest client-token lifetime, plus
	// the clock skew allowed between replicas.
	Retain time.Duration
}

// DefaultRotation is what the operator and `voice-server fleet-secret
// rotate` use. Activation: the kubelet refreshes a mounted Secret within
// its sync period plus its cache's lifetime (about a minute each by
// default), the server reads the file again every --secret-poll-interval
// (10 s, at most 1 min), and clocks may differ by a few seconds: three
// minutes cover them all. Retain: the longest client-token lifetime
// (10 min) plus the 5 s clock skew a replica allows, with a minute to
// spare.
var DefaultRotation = Rotation{
	Activation: 3 * time.Minute,
	Retain:     11*time.Minute + 5*time.Second,
}

// ErrTooManyKeys is returned by Rotate when the keys that still verify
// tokens fill the file: a rotation must wait until the oldest of them ends
// (NextPrune), because dropping a key early would refuse tokens it signed.
var ErrTooManyKeys = errors.New("too many signing keys still verify tokens; rotate again once the oldest has ended")

// Rotate adds a new key that signs from now+Activation. The key signing now
// keeps signing until then and verifies Retain longer; keys that stopped
// signing earlier keep their ends; keys whose verification has ended are
// dropped. A key that has not started signing yet (a rotation still
// settling) is replaced rather than kept, since it signed nothing: a burst
// of rotation requests makes one new key, not many. Rotate never drops a
// key that still verifies; when they fill the file it returns
// ErrTooManyKeys and the keys unchanged.
func (k TokenKeys) Rotate(random io.Reader, now time.Time, r Rotation) (TokenKeys, error) {
	signFrom := now.Add(r.Activation).UTC().Truncate(time.Second)
	if signFrom.Before(now) {
		signFrom = signFrom.Add(time.Second)
	}
	retireAt := signFrom.Add(r.Retain)
	current, signing := k.Signing(now)
	var kept []TokenKey
	for _, key := range k.Pruned(now).Keys {
		switch {
		case key.SignFrom != nil && key.SignFrom.After(now):
			continue // pending: it signed nothing
		case signing && key.ID == current.ID:
			// It signs until the new key takes over, so it must verify
			// Retain past that, whatever an earlier rotation said.
			key.VerifyUntil = &retireAt
		case key.VerifyUntil == nil:
			// Neither signing nor ending (a hand-written file): it
			// stops now, at the latest with the new key.
			key.VerifyUntil = &retireAt
		}
		kept = append(kept, key)
	}
	if len(kept)+1 > MaxTokenKeys {
		return k, ErrTooManyKeys
	}
	fresh, err := NewTokenKey(random, now, &signFrom)
	if err != nil {
		return TokenKeys{}, err
	}
	for slices.ContainsFunc(kept, func(key TokenKey) bool { return key.ID == fresh.ID }) {
		// A 40-bit id collision: draw again.
		if fresh, err = NewTokenKey(random, now, &signFrom); err != nil {
			return TokenKeys{}, err
		}
	}
	return TokenKeys{Keys: append([]TokenKey{fresh}, kept...)}, nil
}

// Pruned returns the keys without those that no longer verify at now. It
// never returns an empty set: the newest key stays whatever its times say.
func (k TokenKeys) Pruned(now time.Time) TokenKeys {
	var kept []TokenKey
	for _, key := range k.Keys {
		if key.Verifies(now) {
			kept = append(kept, key)
		}
	}
	if len(kept) == 0 && len(k.Keys) > 0 {
		kept = []TokenKey{k.Newest()}
	}
	return TokenKeys{Keys: kept}
}

// NextPrune is when Pruned next drops a key, and false when no key has an
// end.
func (k TokenKeys) NextPrune() (time.Time, bool) {
	var next time.Time
	found := false
	for _, key := range k.Keys {
		if key.VerifyUntil != nil && (!found || key.VerifyUntil.Before(next)) {
			next, found = *key.VerifyUntil, true
		}
	}
	return next, found
}

// Equal reports whether two key sets are the same, key for key.
func (k TokenKeys) Equal(o TokenKeys) bool {
	return slices.EqualFunc(k.Keys, o.Keys, func(a, b TokenKey) bool {
		return a.ID == b.ID && a.Secret == b.Secret && a.Created.Equal(b.Created) &&
			timePtrEqual(a.SignFrom, b.SignFrom) && timePtrEqual(a.VerifyUntil, b.VerifyUntil)
	})
}

func timePtrEqual(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// ParseAdminToken checks the admin-token file: one token of printable ASCII
// without spaces, MinAdminTokenLen to MaxAdminTokenLen bytes after trimming
// the surrounding whitespace that hand-written files carry.
func ParseAdminToken(data []byte) (string, error) {
	if len(data) > MaxFileSize {
		return "", invalid(AdminTokenFile, "larger than %d bytes", MaxFileSize)
	}
	token := strings.TrimSpace(string(data))
	switch {
	case len(token) < MinAdminTokenLen:
		return "", invalid(AdminTokenFile, "the token must be at least %d characters, got %d", MinAdminTokenLen, len(token))
	case len(token) > MaxAdminTokenLen:
		return "", invalid(AdminTokenFile, "the token must be at most %d characters", MaxAdminTokenLen)
	}
	for i := 0; i < len(token); i++ {
		if c := token[i]; c <= ' ' || c > '~' {
			return "", invalid(AdminTokenFile, "the token may hold only printable ASCII without spaces")
		}
	}
	return token, nil
}

// ParseFleetKey checks the fleet-key file: FleetKeyBytes bytes as standard
// base64 (padded), surrounding whitespace trimmed.
func ParseFleetKey(data []byte) ([]byte, error) {
	if len(data) > MaxFileSize {
		return nil, invalid(FleetKeyFile, "larger than %d bytes", MaxFileSize)
	}
	key, err := base64.StdEncoding.Strict().DecodeString(strings.TrimSpace(string(data)))
	switch {
	case err != nil:
		return nil, invalid(FleetKeyFile, "not standard base64")
	case len(key) != FleetKeyBytes:
		return nil, invalid(FleetKeyFile, "the key must be %d bytes, got %d", FleetKeyBytes, len(key))
	}
	return key, nil
}

// Generate makes the data of a new fleet Secret: one signing key (signing at
// once), an admin token and a fleet key. withAPIKey adds a generated API key
// for a VoiceGateway that names no API key Secret of its own.
func Generate(random io.Reader, now time.Time, withAPIKey bool) (map[string][]byte, error) {
	if random == nil {
		random = rand.Reader
	}
	key, err := NewTokenKey(random, now, nil)
	if err != nil {
		return nil, err
	}
	keys, err := TokenKeys{Keys: []TokenKey{key}}.Marshal()
	if err != nil {
		return nil, err
	}
	admin, err := randomText(random, AdminTokenPrefix, 32)
	if err != nil {
		return nil, err
	}
	fleetKey := make([]byte, FleetKeyBytes)
	if _, err := io.ReadFull(random, fleetKey); err != nil {
		return nil, err
	}
	data := map[string][]byte{
		TokenKeysFile:  keys,
		AdminTokenFile: []byte(admin),
		FleetKeyFile:   []byte(base64.StdEncoding.EncodeToString(fleetKey)),
	}
	if withAPIKey {
		if data[APIKeysFile], err = GenerateAPIKeys(random); err != nil {
			return nil, err
		}
	}
	return data, nil
}

// GenerateAPIKeys makes the content of an api-keys file with one new key.
func GenerateAPIKeys(random io.Reader) ([]byte, error) {
	if random == nil {
		random = rand.Reader
	}
	key, err := randomText(random, APIKeyPrefix, 32)
	if err != nil {
		return nil, err
	}
	return []byte(key + "\n"), nil
}

func randomText(random io.Reader, prefix string, n int) (string, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(random, b); err != nil {
		return "", err
	}
	return prefix + b64.EncodeToString(b), nil
}

// keyIDEncoding spells key ids: base32 without padding, lowercased.
var keyIDEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// Check reports every problem of a fleet Secret's data at once, each naming
// the data key: the files the server needs must be present and valid, and
// api-keys too when wantAPIKeys (the VoiceGateway names no API key Secret of
// its own). Messages never hold a secret.
func Check(data map[string][]byte, wantAPIKeys bool) error {
	var errs []error
	if raw, ok := data[TokenKeysFile]; !ok {
		errs = append(errs, invalid(TokenKeysFile, "missing"))
	} else if _, err := ParseTokenKeys(raw); err != nil {
		errs = append(errs, err)
	}
	if raw, ok := data[AdminTokenFile]; !ok {
		errs = append(errs, invalid(AdminTokenFile, "missing"))
	} else if _, err := ParseAdminToken(raw); err != nil {
		errs = append(errs, err)
	}
	if raw, ok := data[FleetKeyFile]; !ok {
		errs = append(errs, invalid(FleetKeyFile, "missing"))
	} else if _, err := ParseFleetKey(raw); err != nil {
		errs = append(errs, err)
	}
	if raw, ok := data[APIKeysFile]; wantAPIKeys && (!ok || len(bytes.TrimSpace(raw)) == 0) {
		errs = append(errs, invalid(APIKeysFile, "missing: add API keys, one per line, or name a Secret in spec.auth.apiKeysSecretRef"))
	}
	return errors.Join(errs...)
}

// Fill returns data with each missing or invalid file generated anew and
// every valid one kept byte for byte, and the names of the files it made.
// It is how the operator repairs a fleet Secret it owns without replacing
// the keys that clients' tokens and the pods depend on.
func Fill(data map[string][]byte, random io.Reader, now time.Time, withAPIKey bool) (map[string][]byte, []string, error) {
	fresh, err := Generate(random, now, withAPIKey)
	if err != nil {
		return nil, nil, err
	}
	out := make(map[string][]byte, len(fresh)+len(data))
	for k, v := range data {
		out[k] = v
	}
	var made []string
	replace := func(file string, valid bool) {
		if !valid {
			out[file] = fresh[file]
			made = append(made, file)
		}
	}
	_, err = ParseTokenKeys(data[TokenKeysFile])
	replace(TokenKeysFile, err == nil)
	_, err = ParseAdminToken(data[AdminTokenFile])
	replace(AdminTokenFile, err == nil)
	_, err = ParseFleetKey(data[FleetKeyFile])
	replace(FleetKeyFile, err == nil)
	if withAPIKey {
		replace(APIKeysFile, len(bytes.TrimSpace(data[APIKeysFile])) > 0)
	}
	return out, made, nil
}
