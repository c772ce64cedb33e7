// Package auth decides who may open a voice session or mint a client token.
//
// It exists apart from the server so that the one component handling
// secrets is small enough to read in a sitting and is tested, fuzzed and
// benchmarked on its own. Three rules run through it:
//
//   - Secrets never leave it. Keys are kept as SHA-256 digests, logs and
//     principals name a key by KeyID, errors never quote what a client
//     sent, and Credential redacts itself when formatted.
//   - Comparisons take the same time whatever is wrong with the input, so
//     response times reveal neither which key nearly matched nor how much
//     of a token's MAC was right.
//   - Untrusted input is bounded before it is examined: header, query and
//     token lengths are checked first, and a token's MAC is verified before
//     its payload is decoded.
//
// API keys come from a file (a mounted Secret) that KeyStore reloads without
// a restart. Browsers, which cannot set headers on a WebSocket, use
// short-lived client tokens minted by TokenIssuer and carried in the
// subprotocol list or the query string.
package auth

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Authentication failures. All four are reported to clients with the
// protocol code "unauthorized" (HTTP 401), so that a caller learns nothing
// about which check failed beyond the message, while metrics label them
// by Reason.
var (
	ErrMissingCredentials   = errors.New("missing credentials")
	ErrMalformedCredentials = errors.New("malformed credentials")
	ErrInvalidCredentials   = errors.New("invalid credentials")
	ErrExpiredToken         = errors.New("expired client token")
	// ErrReusedToken is a client token that already opened as many
	// sessions on this process as it may (TokenUses); it is reported as
	// unauthorized too, and counts as a failed authentication.
	ErrReusedToken = fmt.Errorf("%w: client token already used", ErrInvalidCredentials)
)

// Reasons, the metric label values of authentication failures.
const (
	ReasonMissing   = "missing"
	ReasonMalformed = "malformed"
	ReasonInvalid   = "invalid"
	ReasonExpired   = "expired"
	ReasonReused    = "reused"
)

// Reason returns the metric label of an authentication failure, or "" for
// nil and for errors that are not authentication failures.
func Reason(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrReusedToken):
		return ReasonReused
	case errors.Is(err, ErrMissingCredentials):
		return ReasonMissing
	case errors.Is(err, ErrMalformedCredentials):
		return ReasonMalformed
	case errors.Is(err, ErrInvalidCredentials):
		return ReasonInvalid
	case errors.Is(err, ErrExpiredToken):
		return ReasonExpired
	default:
		return ""
	}
}

// Principal is an authenticated caller. It holds nothing secret, so it may
// be logged and attached to sessions.
type Principal struct {
	Kind   Kind
	Source Source
	// KeyID names the API key: the one presented, or for a client token
	// the one that minted it, when the mint endpoint recorded it.
	KeyID string
	// TokenID, ExpiresAt and Session are set for client tokens only.
	TokenID   string
	ExpiresAt time.Time
	Session   SessionClaims
}

// Authenticator checks requests against the current API keys and the token
// secret. A nil Keys refuses every API key and a nil Tokens every client
// token, so a server configured with one kind of credential cannot be
// entered with the other.
type Authenticator struct {
	Keys   *KeyStore
	Tokens *TokenIssuer
	// AllowAPIKeyInBrowser accepts an API key in the
	// openai-insecure-api-key.<key> subprotocol (--allow-api-key-in-browser).
	AllowAPIKeyInBrowser bool
}

// Authenticate finds the request's credential and verifies it. Every error
// wraps one of ErrMissingCredentials, ErrMalformedCredentials,
// ErrInvalidCredentials or ErrExpiredToken.
func (a *Authenticator) Authenticate(r *http.Request) (Principal, error) {
	cred, err := ParseCredentials(r, a.AllowAPIKeyInBrowser)
	if err != nil {
		return Principal{}, err
	}
	return a.Verify(cred)
}

// Verify checks one credential, for callers that extracted it themselves.
func (a *Authenticator) Verify(cred Credential) (Principal, error) {
	switch cred.Kind {
	case KindAPIKey:
		keyID, ok := a.Keys.Keys().Match(cred.Value)
		if !ok {
			return Principal{}, errInvalid("unknown API key")
		}
		return Principal{Kind: KindAPIKey, Source: cred.Source, KeyID: keyID}, nil

	case KindClientToken:
		if a.Tokens == nil {
			return Principal{}, errInvalid("client tokens are not enabled on this gateway")
		}
		claims, err := a.Tokens.Verify(cred.Value)
		if err != nil {
			return Principal{}, err
		}
		// Without a key file there is nothing to revoke against; with one,
		// a token dies with the key that minted it.
		if claims.KeyID != "" && a.Keys != nil && !a.Keys.Keys().HasID(claims.KeyID) {
			return Principal{}, errInvalid("the API key that minted this client token was revoked")
		}
		return Principal{
			Kind:      KindClientToken,
			Source:    cred.Source,
			KeyID:     claims.KeyID,
			TokenID:   claims.ID,
			ExpiresAt: claims.ExpiresAt,
			Session:   claims.Session,
		}, nil

	default:
		return Principal{}, malformed("unknown credential kind")
	}
}

func errInvalid(reason string) error {
	return fmt.Errorf("%w: %s", ErrInvalidCredentials, reason)
}
