package auth

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// Kind tells API keys from client tokens; its values are stable log and
// metric labels.
type Kind string

const (
	KindAPIKey      Kind = "api_key"
	KindClientToken Kind = "client_token"
)

// Source is where in the request a credential was found; its values are
// stable log and metric labels.
type Source string

const (
	SourceHeader      Source = "header"      // Authorization: Bearer
	SourceSubprotocol Source = "subprotocol" // Sec-WebSocket-Protocol entry
	SourceQuery       Source = "query"       // ?token=
)

// Subprotocol names. Browsers cannot set headers on a WebSocket, but they
// can offer subprotocols, so a token travels as one offered entry next to a
// real protocol name that the server echoes back.
const (
	// SubprotocolRealtime is what clients of the OpenAI Realtime API offer.
	SubprotocolRealtime = "realtime"
	// SubprotocolV1 is the gateway's own protocol name.
	SubprotocolV1 = "voicegateway.v1"
	// SubprotocolTokenPrefix precedes a client token in an offered entry.
	SubprotocolTokenPrefix = "voicegateway.token."
	// SubprotocolOpenAIKeyPrefix is where clients written for OpenAI's
	// browser flow put their ephemeral key; they work unchanged when handed
	// a gateway client token instead.
	SubprotocolOpenAIKeyPrefix = "openai-insecure-api-key."
)

// ErrAPIKeyInBrowser is the refusal of a long-lived API key outside the
// Authorization header (docs/protocol.md quotes it).
var ErrAPIKeyInBrowser = errors.New("API keys are accepted only in the Authorization header: " +
	"in a URL or a subprotocol a browser shows them to anyone. Have your backend mint a client secret " +
	"(POST /v1/realtime/client_secrets, an " + TokenPrefix + "… value) and connect with that, " +
	"or start the gateway with --allow-api-key-in-browser")

// Limits applied before any other work on a request.
const (
	maxHeaderValueLen      = 4 << 10 // per header line
	maxCredentialLen       = 4 << 10
	maxSubprotocolLines    = 8
	maxSubprotocolEntries  = 32
	maxRawQueryLen         = 24 << 10 // room for a resume handle (server/resume.MaxHandleBytes)
	queryTokenParam        = "token"
	redactedCredentialText = "[redacted]"
)

// Credential is a secret presented by a client, not yet verified.
type Credential struct {
	Kind   Kind
	Value  string
	Source Source
}

// String keeps the secret out of anything that formats a Credential.
func (c Credential) String() string {
	return "Credential{Kind:" + string(c.Kind) + " Source:" + string(c.Source) + " Value:" + redactedCredentialText + "}"
}

// GoString covers %#v, which does not use String.
func (c Credential) GoString() string { return c.String() }

// MarshalLog keeps the secret out of logr key/value pairs.
func (c Credential) MarshalLog() any {
	return struct{ Kind, Source, Value string }{string(c.Kind), string(c.Source), redactedCredentialText}
}

// CredentialsFromRequest finds the one credential a request carries, looking
// at, in order: the Authorization header (Bearer scheme), the offered
// subprotocol entries voicegateway.token.<token> and
// openai-insecure-api-key.<token>, and the query parameter token.
//
// A value starting with TokenPrefix is a client token, anything else an API
// key. API keys are accepted only from the Authorization header: in a URL or
// a subprotocol list they end up in access logs, browser history and page
// source. The same value in several places counts once; different values
// are refused, since picking one would let a proxy and a client disagree
// about who is calling.
//
// Errors wrap ErrMissingCredentials or ErrMalformedCredentials; their
// messages never contain the credential and are safe to show the client.
func CredentialsFromRequest(r *http.Request) (Credential, error) {
	return ParseCredentials(r, false)
}

// ParseCredentials is CredentialsFromRequest, with allowKeyInSubprotocol
// (--allow-api-key-in-browser) accepting an API key in the
// openai-insecure-api-key.<key> subprotocol too: the OpenAI SDKs put one
// there when a page holds a long-lived key, which the operator may choose
// to allow for a trusted, internal page. A key in the gateway's own
// voicegateway.token. entry or in the URL is refused whatever it says.
func ParseCredentials(r *http.Request, allowKeyInSubprotocol bool) (Credential, error) {
	found := credentialCollector{allowKeyInSubprotocol: allowKeyInSubprotocol}

	if values := r.Header.Values("Authorization"); len(values) > 0 {
		if len(values) > 1 {
			return Credential{}, malformed("more than one Authorization header")
		}
		value, err := parseBearer(values[0])
		if err != nil {
			return Credential{}, err
		}
		if err := found.add(value, SourceHeader); err != nil {
			return Credential{}, err
		}
	}

	err := forEachSubprotocol(r.Header.Values("Sec-WebSocket-Protocol"), func(entry string) error {
		if value, ok := strings.CutPrefix(entry, SubprotocolOpenAIKeyPrefix); ok {
			return found.addEntry(value, SourceSubprotocol, true)
		}
		if value, ok := strings.CutPrefix(entry, SubprotocolTokenPrefix); ok {
			return found.add(value, SourceSubprotocol)
		}
		return nil
	})
	if err != nil {
		return Credential{}, err
	}

	if r.URL != nil {
		if err := queryTokens(r.URL.RawQuery, func(value string) error {
			return found.add(value, SourceQuery)
		}); err != nil {
			return Credential{}, err
		}
	}

	if !found.ok {
		return Credential{}, fmt.Errorf("%w: send Authorization: Bearer <key>, or a client token in the %s<token> subprotocol or the %s query parameter",
			ErrMissingCredentials, SubprotocolTokenPrefix, queryTokenParam)
	}
	return found.first, nil
}

// credentialCollector keeps the first credential seen and refuses a second,
// different one.
type credentialCollector struct {
	first Credential
	ok    bool
	// allowKeyInSubprotocol accepts an API key in the
	// openai-insecure-api-key. entry (--allow-api-key-in-browser).
	allowKeyInSubprotocol bool
}

func (c *credentialCollector) add(value string, source Source) error {
	return c.addEntry(value, source, false)
}

// addEntry is add; openAIEntry says the value came from the
// openai-insecure-api-key. subprotocol, the one place outside the
// Authorization header where an operator may allow API keys.
func (c *credentialCollector) addEntry(value string, source Source, openAIEntry bool) error {
	if value == "" {
		return malformed("empty credential in the " + string(source))
	}
	if len(value) > maxCredentialLen {
		return malformed(fmt.Sprintf("credential in the %s longer than %d bytes", source, maxCredentialLen))
	}
	if !isVisibleASCII(value) {
		return malformed("credential in the " + string(source) + " contains a space, control or non-ASCII character")
	}
	kind := KindAPIKey
	if IsClientToken(value) {
		kind = KindClientToken
	}
	if kind == KindAPIKey && source != SourceHeader && !(c.allowKeyInSubprotocol && openAIEntry) {
		return malformed(ErrAPIKeyInBrowser.Error())
	}
	if c.ok {
		if c.first.Value != value {
			return malformed("more than one credential in the request")
		}
		return nil
	}
	c.first = Credential{Kind: kind, Value: value, Source: source}
	c.ok = true
	return nil
}

// parseBearer returns the credential of an Authorization header value.
func parseBearer(header string) (string, error) {
	if len(header) > maxHeaderValueLen {
		return "", malformed(fmt.Sprintf("Authorization header longer than %d bytes", maxHeaderValueLen))
	}
	header = trimOWS(header)
	scheme, rest, _ := strings.Cut(header, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", malformed("the Authorization header must use the Bearer scheme")
	}
	value := strings.TrimLeft(rest, " ")
	if value == "" {
		return "", malformed("empty Bearer credential in the Authorization header")
	}
	return value, nil
}

// forEachSubprotocol calls fn with each offered subprotocol entry, over all
// Sec-WebSocket-Protocol header lines, with surrounding whitespace trimmed
// and empty list elements skipped (RFC 9110 section 5.6.1).
func forEachSubprotocol(lines []string, fn func(entry string) error) error {
	if len(lines) > maxSubprotocolLines {
		return malformed(fmt.Sprintf("more than %d Sec-WebSocket-Protocol headers", maxSubprotocolLines))
	}
	for _, line := range lines {
		if len(line) > maxHeaderValueLen {
			return malformed(fmt.Sprintf("Sec-WebSocket-Protocol header longer than %d bytes", maxHeaderValueLen))
		}
	}
	entries := 0
	for _, line := range lines {
		for line != "" {
			var entry string
			entry, line, _ = strings.Cut(line, ",")
			entry = trimOWS(entry)
			if entry == "" {
				continue
			}
			if entries++; entries > maxSubprotocolEntries {
				return malformed(fmt.Sprintf("more than %d offered subprotocols", maxSubprotocolEntries))
			}
			if err := fn(entry); err != nil {
				return err
			}
		}
	}
	return nil
}

// queryTokens calls fn with the decoded value of each token parameter in a
// raw query. It decodes nothing else, so that a malformed escape in an
// unrelated parameter is not the gateway's business.
func queryTokens(rawQuery string, fn func(value string) error) error {
	if len(rawQuery) > maxRawQueryLen {
		return malformed(fmt.Sprintf("query string longer than %d bytes", maxRawQueryLen))
	}
	for rawQuery != "" {
		var param string
		param, rawQuery, _ = strings.Cut(rawQuery, "&")
		key, value, _ := strings.Cut(param, "=")
		if key != queryTokenParam {
			if !strings.ContainsAny(key, "%+") {
				continue
			}
			// A client may escape the name; what counts is what it decodes to.
			if decoded, err := url.QueryUnescape(key); err != nil || decoded != queryTokenParam {
				continue
			}
		}
		decoded, err := url.QueryUnescape(value)
		if err != nil {
			return malformed("invalid percent-encoding in the token query parameter")
		}
		if err := fn(decoded); err != nil {
			return err
		}
	}
	return nil
}

// SubprotocolToEcho returns the subprotocol the upgrade response must
// select. A browser that offered subprotocols fails the handshake unless
// the server selects one of them, and the token-bearing entry must never be
// echoed (it would put the secret in a response header), so a browser
// client offers a real protocol name next to its token:
// SubprotocolRealtime is preferred, then SubprotocolV1. It returns "" when
// neither is offered, including when the header is over its limits.
func SubprotocolToEcho(r *http.Request) string {
	offeredV1 := false
	offeredRealtime := false
	err := forEachSubprotocol(r.Header.Values("Sec-WebSocket-Protocol"), func(entry string) error {
		switch entry {
		case SubprotocolRealtime:
			offeredRealtime = true
		case SubprotocolV1:
			offeredV1 = true
		}
		return nil
	})
	switch {
	case err != nil:
		return ""
	case offeredRealtime:
		return SubprotocolRealtime
	case offeredV1:
		return SubprotocolV1
	default:
		return ""
	}
}

func malformed(reason string) error {
	return fmt.Errorf("%w: %s", ErrMalformedCredentials, reason)
}

// trimOWS trims the optional whitespace HTTP allows around field values
// and list elements: spaces and horizontal tabs only.
func trimOWS(s string) string {
	return strings.Trim(s, " \t")
}

// isVisibleASCII reports whether s holds only printable, non-space ASCII
// (RFC 5234 VCHAR): what a credential may contain.
func isVisibleASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
