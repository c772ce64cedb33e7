package auth

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-logr/logr/funcr"
)

// tokenLike is shaped like a client token; request parsing does not verify
// it, so it need not be a real one.
const (
	tokenLike  = TokenPrefix + "eyJ2IjoxfQ.c2lnbmF0dXJl"
	tokenOther = TokenPrefix + "eyJ2IjoyfQ.c2lnbmF0dXJl"
)

// request builds an upgrade request; each header field is a list of lines.
func request(authorization, protocols []string, rawQuery string) *http.Request {
	target := "/v1/realtime"
	if rawQuery != "" {
		target += "?" + rawQuery
	}
	r := httptest.NewRequest(http.MethodGet, target, nil)
	for _, v := range authorization {
		r.Header.Add("Authorization", v)
	}
	for _, v := range protocols {
		r.Header.Add("Sec-WebSocket-Protocol", v)
	}
	return r
}

func TestCredentialsFromRequest(t *testing.T) {
	tests := []struct {
		name          string
		authorization []string // Authorization header lines
		protocols     []string // Sec-WebSocket-Protocol header lines
		rawQuery      string
		want          Credential
		wantErr       error
		wantMsg       string // substring of the error message
		allowKey      bool   // --allow-api-key-in-browser
	}{
		{
			name:      "API key in OpenAI subprotocol, allowed by the operator",
			protocols: []string{"realtime, " + SubprotocolOpenAIKeyPrefix + keyAlpha},
			allowKey:  true,
			want:      Credential{Kind: KindAPIKey, Value: keyAlpha, Source: SourceSubprotocol},
		},
		{
			name:      "API key in the gateway's subprotocol, refused even when allowed",
			protocols: []string{"realtime, " + SubprotocolTokenPrefix + keyAlpha},
			allowKey:  true,
			wantErr:   ErrMalformedCredentials,
			wantMsg:   "--allow-api-key-in-browser",
		},
		{
			name:     "API key in query, refused even when allowed",
			rawQuery: "token=" + keyAlpha,
			allowKey: true,
			wantErr:  ErrMalformedCredentials,
			wantMsg:  "only in the Authorization header",
		},
		{
			name:      "legacy client token in OpenAI subprotocol",
			protocols: []string{"realtime, " + SubprotocolOpenAIKeyPrefix + LegacyTokenPrefix + "eyJ2IjoxfQ.c2ln"},
			want:      Credential{Kind: KindClientToken, Value: LegacyTokenPrefix + "eyJ2IjoxfQ.c2ln", Source: SourceSubprotocol},
		},
		// Every source and kind.
		{
			name:          "API key in header",
			authorization: []string{"Bearer " + keyAlpha},
			want:          Credential{Kind: KindAPIKey, Value: keyAlpha, Source: SourceHeader},
		},
		{
			name:          "client token in header",
			authorization: []string{"Bearer " + tokenLike},
			want:          Credential{Kind: KindClientToken, Value: tokenLike, Source: SourceHeader},
		},
		{
			name:      "client token in voicegateway subprotocol",
			protocols: []string{"realtime, " + SubprotocolTokenPrefix + tokenLike},
			want:      Credential{Kind: KindClientToken, Value: tokenLike, Source: SourceSubprotocol},
		},
		{
			name:      "client token in OpenAI subprotocol",
			protocols: []string{"realtime, " + SubprotocolOpenAIKeyPrefix + tokenLike},
			want:      Credential{Kind: KindClientToken, Value: tokenLike, Source: SourceSubprotocol},
		},
		{
			name:      "client token in a second subprotocol header line",
			protocols: []string{"realtime", SubprotocolTokenPrefix + tokenLike},
			want:      Credential{Kind: KindClientToken, Value: tokenLike, Source: SourceSubprotocol},
		},
		{
			name:     "client token in query",
			rawQuery: "model=gpt-realtime&token=" + tokenLike,
			want:     Credential{Kind: KindClientToken, Value: tokenLike, Source: SourceQuery},
		},
		{
			name:     "client token in query under an escaped name",
			rawQuery: "tok%65n=" + tokenLike,
			want:     Credential{Kind: KindClientToken, Value: tokenLike, Source: SourceQuery},
		},
		{
			name:          "API key in subprotocol",
			protocols:     []string{"realtime, " + SubprotocolTokenPrefix + keyAlpha},
			wantErr:       ErrMalformedCredentials,
			wantMsg:       "mint a client secret",
			authorization: nil,
		},
		{
			name:      "API key in OpenAI subprotocol",
			protocols: []string{"realtime, " + SubprotocolOpenAIKeyPrefix + keyAlpha},
			wantErr:   ErrMalformedCredentials,
			wantMsg:   "only in the Authorization header",
		},
		{
			name:     "API key in query",
			rawQuery: "token=" + keyAlpha,
			wantErr:  ErrMalformedCredentials,
			wantMsg:  "mint a client secret",
		},

		// Authorization header forms.
		{
			name:          "scheme in lower case",
			authorization: []string{"bearer " + keyAlpha},
			want:          Credential{Kind: KindAPIKey, Value: keyAlpha, Source: SourceHeader},
		},
		{
			name:          "scheme in upper case",
			authorization: []string{"BEARER " + keyAlpha},
			want:          Credential{Kind: KindAPIKey, Value: keyAlpha, Source: SourceHeader},
		},
		{
			name:          "several spaces after the scheme",
			authorization: []string{"Bearer    " + keyAlpha},
			want:          Credential{Kind: KindAPIKey, Value: keyAlpha, Source: SourceHeader},
		},
		{
			name:          "surrounding whitespace",
			authorization: []string{" \tBearer " + keyAlpha + " \t"},
			want:          Credential{Kind: KindAPIKey, Value: keyAlpha, Source: SourceHeader},
		},
		{
			name:          "Basic scheme",
			authorization: []string{"Basic dXNlcjpwYXNz"},
			wantErr:       ErrMalformedCredentials,
			wantMsg:       "Bearer scheme",
		},
		{
			name:          "scheme glued to the credential",
			authorization: []string{"Bearer" + keyAlpha},
			wantErr:       ErrMalformedCredentials,
			wantMsg:       "Bearer scheme",
		},
		{
			name:          "tab instead of space",
			authorization: []string{"Bearer\t" + keyAlpha},
			wantErr:       ErrMalformedCredentials,
		},
		{
			name:          "scheme only",
			authorization: []string{"Bearer"},
			wantErr:       ErrMalformedCredentials,
			wantMsg:       "empty Bearer credential",
		},
		{
			name:          "scheme and spaces only",
			authorization: []string{"Bearer   "},
			wantErr:       ErrMalformedCredentials,
			wantMsg:       "empty Bearer credential",
		},
		{
			name:          "empty header",
			authorization: []string{""},
			wantErr:       ErrMalformedCredentials,
		},
		{
			name:          "two Authorization headers",
			authorization: []string{"Bearer " + keyAlpha, "Bearer " + keyAlpha},
			wantErr:       ErrMalformedCredentials,
			wantMsg:       "more than one Authorization header",
		},
		{
			name:          "space inside the credential",
			authorization: []string{"Bearer sk-alpha 0123456789"},
			wantErr:       ErrMalformedCredentials,
			wantMsg:       "control or non-ASCII",
		},

		// Control and non-ASCII characters.
		{
			name:          "NUL in header credential",
			authorization: []string{"Bearer sk-alpha\x000123456789abcdef"},
			wantErr:       ErrMalformedCredentials,
		},
		{
			name:          "DEL in header credential",
			authorization: []string{"Bearer sk-alpha\x7f0123456789abcdef"},
			wantErr:       ErrMalformedCredentials,
		},
		{
			name:          "non-ASCII in header credential",
			authorization: []string{"Bearer sk-alpha-é0123456789abcdef"},
			wantErr:       ErrMalformedCredentials,
		},
		{
			name:      "control character in subprotocol token",
			protocols: []string{"realtime, " + SubprotocolTokenPrefix + TokenPrefix + "abc\x01def"},
			wantErr:   ErrMalformedCredentials,
		},
		{
			name:     "escaped control character in query token",
			rawQuery: "token=" + TokenPrefix + "abc%0Adef",
			wantErr:  ErrMalformedCredentials,
		},
		{
			name:     "plus (a space) in query token",
			rawQuery: "token=" + TokenPrefix + "abc+def",
			wantErr:  ErrMalformedCredentials,
		},

		// Several credentials.
		{
			name:          "API key in header and token in query",
			authorization: []string{"Bearer " + keyAlpha},
			rawQuery:      "token=" + tokenLike,
			wantErr:       ErrMalformedCredentials,
			wantMsg:       "more than one credential",
		},
		{
			name:      "two different tokens in subprotocols",
			protocols: []string{SubprotocolTokenPrefix + tokenLike + ", " + SubprotocolOpenAIKeyPrefix + tokenOther + ", realtime"},
			wantErr:   ErrMalformedCredentials,
			wantMsg:   "more than one credential",
		},
		{
			name:     "two different tokens in query",
			rawQuery: "token=" + tokenLike + "&token=" + tokenOther,
			wantErr:  ErrMalformedCredentials,
			wantMsg:  "more than one credential",
		},
		{
			name:          "same token in header, subprotocol and query",
			authorization: []string{"Bearer " + tokenLike},
			protocols:     []string{"realtime, " + SubprotocolTokenPrefix + tokenLike},
			rawQuery:      "token=" + tokenLike,
			want:          Credential{Kind: KindClientToken, Value: tokenLike, Source: SourceHeader},
		},
		{
			name:      "same token under both subprotocol prefixes",
			protocols: []string{SubprotocolTokenPrefix + tokenLike + "," + SubprotocolOpenAIKeyPrefix + tokenLike},
			want:      Credential{Kind: KindClientToken, Value: tokenLike, Source: SourceSubprotocol},
		},

		// Sizes.
		{
			name:          "oversized Authorization header",
			authorization: []string{"Bearer " + strings.Repeat("k", maxHeaderValueLen)},
			wantErr:       ErrMalformedCredentials,
			wantMsg:       "longer than 4096 bytes",
		},
		{
			name:          "largest Authorization header",
			authorization: []string{"Bearer " + strings.Repeat("k", maxHeaderValueLen-len("Bearer "))},
			want:          Credential{Kind: KindAPIKey, Value: strings.Repeat("k", maxHeaderValueLen-len("Bearer ")), Source: SourceHeader},
		},
		{
			name:      "oversized subprotocol header",
			protocols: []string{"realtime, " + SubprotocolTokenPrefix + TokenPrefix + strings.Repeat("a", maxHeaderValueLen)},
			wantErr:   ErrMalformedCredentials,
			wantMsg:   "Sec-WebSocket-Protocol header longer",
		},
		{
			name:      "too many subprotocol header lines",
			protocols: strings.Split(strings.Repeat("realtime,", maxSubprotocolLines+1), ",")[:maxSubprotocolLines+1],
			wantErr:   ErrMalformedCredentials,
			wantMsg:   "Sec-WebSocket-Protocol headers",
		},
		{
			name:      "too many subprotocol entries",
			protocols: []string{strings.Repeat("x,", maxSubprotocolEntries) + SubprotocolTokenPrefix + tokenLike},
			wantErr:   ErrMalformedCredentials,
			wantMsg:   "offered subprotocols",
		},
		{
			name:     "oversized query",
			rawQuery: "pad=" + strings.Repeat("p", maxRawQueryLen) + "&token=" + tokenLike,
			wantErr:  ErrMalformedCredentials,
			wantMsg:  "query string longer",
		},
		{
			name:     "oversized query token",
			rawQuery: "token=" + TokenPrefix + strings.Repeat("a", maxCredentialLen),
			wantErr:  ErrMalformedCredentials,
			wantMsg:  "longer than 4096 bytes",
		},

		// Odd but harmless, or empty.
		{
			name:      "empty list elements and whitespace in subprotocols",
			protocols: []string{" , realtime ,, \t" + SubprotocolTokenPrefix + tokenLike + "\t, "},
			want:      Credential{Kind: KindClientToken, Value: tokenLike, Source: SourceSubprotocol},
		},
		{
			name:     "bad escape in an unrelated parameter",
			rawQuery: "note=%zz&token=" + tokenLike,
			want:     Credential{Kind: KindClientToken, Value: tokenLike, Source: SourceQuery},
		},
		{
			name:     "bad escape in the token parameter",
			rawQuery: "token=%zz",
			wantErr:  ErrMalformedCredentials,
			wantMsg:  "percent-encoding",
		},
		{
			name:     "empty token parameter",
			rawQuery: "token=",
			wantErr:  ErrMalformedCredentials,
			wantMsg:  "empty credential",
		},
		{
			name:      "empty subprotocol token",
			protocols: []string{"realtime, " + SubprotocolTokenPrefix},
			wantErr:   ErrMalformedCredentials,
			wantMsg:   "empty credential",
		},
		{
			name:     "parameter named like token",
			rawQuery: "tokens=" + tokenLike + "&xtoken=" + tokenLike,
			wantErr:  ErrMissingCredentials,
		},
		{
			name:      "prefix differs in case",
			protocols: []string{"realtime, VoiceGateway.Token." + tokenLike},
			wantErr:   ErrMissingCredentials,
		},
		{
			name:    "nothing",
			wantErr: ErrMissingCredentials,
			wantMsg: "Authorization: Bearer",
		},
		{
			name:      "subprotocol without a token",
			protocols: []string{"realtime"},
			wantErr:   ErrMissingCredentials,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCredentials(request(tt.authorization, tt.protocols, tt.rawQuery), tt.allowKey)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("error = %v, want %v", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantMsg) {
					t.Fatalf("error = %q, want it to contain %q", err, tt.wantMsg)
				}
				for _, secret := range []string{keyAlpha, tokenLike, tokenOther} {
					if strings.Contains(err.Error(), secret) {
						t.Fatalf("error %q quotes a credential", err)
					}
				}
				if got != (Credential{}) {
					t.Fatalf("credential %v returned with an error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("CredentialsFromRequest: %v", err)
			}
			if got != tt.want {
				t.Fatalf("credential = %+v (value %q), want %+v (value %q)", got, got.Value, tt.want, tt.want.Value)
			}
		})
	}
}

func TestSubprotocolToEcho(t *testing.T) {
	tests := []struct {
		name      string
		protocols []string
		want      string
	}{
		{name: "none offered", want: ""},
		{name: "realtime with token", protocols: []string{"realtime, " + SubprotocolOpenAIKeyPrefix + tokenLike}, want: SubprotocolRealtime},
		{name: "v1 with token", protocols: []string{SubprotocolTokenPrefix + tokenLike + ", voicegateway.v1"}, want: SubprotocolV1},
		{name: "realtime preferred over v1", protocols: []string{"voicegateway.v1, realtime"}, want: SubprotocolRealtime},
		{name: "across header lines", protocols: []string{SubprotocolTokenPrefix + tokenLike, "voicegateway.v1"}, want: SubprotocolV1},
		{name: "only the token entry", protocols: []string{SubprotocolTokenPrefix + tokenLike}, want: ""},
		{name: "only an unknown protocol", protocols: []string{"chat, superchat"}, want: ""},
		{name: "case matters", protocols: []string{"Realtime"}, want: ""},
		{name: "over the entry limit", protocols: []string{strings.Repeat("x,", maxSubprotocolEntries) + "realtime"}, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := SubprotocolToEcho(request(nil, tt.protocols, "")); got != tt.want {
				t.Fatalf("SubprotocolToEcho = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCredentialNeverPrintsItsValue(t *testing.T) {
	cred := Credential{Kind: KindAPIKey, Value: keyAlpha, Source: SourceHeader}
	var logged strings.Builder
	log := funcr.New(func(prefix, args string) { logged.WriteString(args) }, funcr.Options{})
	log.Info("Authenticating", "credential", cred)

	outputs := map[string]string{
		"%v":   fmt.Sprintf("%v", cred),
		"%+v":  fmt.Sprintf("%+v", cred),
		"%#v":  fmt.Sprintf("%#v", cred),
		"%s":   fmt.Sprintf("%s", cred),
		"logr": logged.String(),
	}
	for verb, out := range outputs {
		if strings.Contains(out, keyAlpha) {
			t.Errorf("%s prints the secret: %s", verb, out)
		}
		if !strings.Contains(out, "redacted") {
			t.Errorf("%s output %q does not say the value was redacted", verb, out)
		}
	}
}
