package auth

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"

	"github.com/voicegateway/voicegateway/server/fleet"
)

func FuzzCredentialsFromRequest(f *testing.F) {
	seeds := []struct{ authorization, protocols, rawQuery string }{
		{"Bearer " + keyAlpha, "", ""},
		{"bearer   " + tokenLike, "", ""},
		{"Basic dXNlcjpwYXNz", "", ""},
		{"Bearer", "", ""},
		{"", "realtime, " + SubprotocolTokenPrefix + tokenLike, ""},
		{"", "realtime, " + SubprotocolOpenAIKeyPrefix + tokenLike, ""},
		{"", SubprotocolTokenPrefix + keyAlpha, ""},
		{"", " , ,voicegateway.v1,,\t", ""},
		{"", "", "token=" + tokenLike},
		{"", "", "tok%65n=" + tokenLike + "&token=" + tokenOther},
		{"", "", "token=%zz&x=%"},
		{"", "", "token=" + keyAlpha},
		{"Bearer " + keyAlpha, "realtime," + SubprotocolTokenPrefix + tokenLike, "token=" + tokenLike},
		{"Bearer sk-\x00\x7f\xff", "realtime,\x01", "token=%00"},
		{"Bearer " + strings.Repeat("k", maxHeaderValueLen), "", ""},
	}
	for _, s := range seeds {
		f.Add(s.authorization, s.protocols, s.rawQuery)
	}
	f.Fuzz(func(t *testing.T, authorization, protocols, rawQuery string) {
		r := &http.Request{Method: http.MethodGet, Header: http.Header{}, URL: &url.URL{Path: "/v1/realtime", RawQuery: rawQuery}}
		if authorization != "" {
			r.Header["Authorization"] = []string{authorization}
		}
		if protocols != "" {
			// A newline splits the input into several header lines.
			r.Header["Sec-Websocket-Protocol"] = strings.Split(protocols, "\n")
		}

		cred, err := CredentialsFromRequest(r)
		if err != nil {
			if Reason(err) != ReasonMissing && Reason(err) != ReasonMalformed {
				t.Fatalf("error %v is neither missing nor malformed", err)
			}
			if cred != (Credential{}) {
				t.Fatalf("credential returned with an error")
			}
		} else {
			if cred.Value == "" || len(cred.Value) > maxCredentialLen || !isVisibleASCII(cred.Value) {
				t.Fatalf("accepted value %q", cred.Value)
			}
			if (cred.Kind == KindClientToken) != strings.HasPrefix(cred.Value, TokenPrefix) {
				t.Fatalf("kind %s for value %q", cred.Kind, cred.Value)
			}
			if cred.Kind == KindAPIKey && cred.Source != SourceHeader {
				t.Fatalf("API key accepted from %s", cred.Source)
			}
			if cred.Source == SourceHeader && !strings.Contains(authorization, cred.Value) ||
				cred.Source == SourceSubprotocol && !strings.Contains(protocols, cred.Value) {
				t.Fatalf("value %q is not in its source", cred.Value)
			}
		}

		switch echo := SubprotocolToEcho(r); echo {
		case "", SubprotocolRealtime, SubprotocolV1:
		default:
			t.Fatalf("SubprotocolToEcho = %q", echo)
		}
	})
}

func FuzzVerifyToken(f *testing.F) {
	clk := newFakeClock()
	// Four keys: "gone" signed an hour ago and has ended; "old" was
	// replaced and still verifies; "current" signs; "next" signs only
	// later. Tokens of "gone", minted while it signed, are seeds that must
	// fail; key ids are a field the fuzzer mutates.
	hourAgo, later, retire := clk.Now().Add(-time.Hour), clk.Now().Add(time.Hour), clk.Now().Add(time.Hour)
	ended := clk.Now().Add(-time.Minute)
	goneKey := fleet.TokenKey{ID: "gone", Secret: b64.EncodeToString([]byte("the-gone-key-the-gone-key-the-go"))}
	before := testingclock.NewFakeClock(hourAgo)
	goneIssuer, err := NewTokenIssuer(keyringOf(f, goneKey), before)
	if err != nil {
		f.Fatal(err)
	}
	goneKey.VerifyUntil = &ended
	issuer, err := NewTokenIssuer(keyringOf(f,
		fleet.TokenKey{ID: "current", Secret: b64.EncodeToString(testSecret), SignFrom: &hourAgo},
		fleet.TokenKey{ID: "old", Secret: b64.EncodeToString([]byte("the-old-key-the-old-key-the-old-")), VerifyUntil: &retire},
		fleet.TokenKey{ID: "next", Secret: b64.EncodeToString([]byte("the-next-key-the-next-key-the-ne")), SignFrom: &later},
		goneKey,
	), clk)
	if err != nil {
		f.Fatal(err)
	}
	goneIssuer.random = &countingReader{}
	for _, ttl := range []time.Duration{time.Minute, DefaultMaxTokenTTL} {
		token, _, err := goneIssuer.Mint(ttl, Claims{})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(token) // signed while "gone" signed; must fail now
		f.Add(strings.Replace(token, "gone.", "old.", 1))
	}
	// Every fuzzing worker runs this setup; with a fixed clock and a
	// counting ID source they all mint the same tokens.
	issuer.random = &countingReader{}
	minted := map[string]bool{}
	for _, claims := range []Claims{
		{},
		{KeyID: KeyID(keyAlpha)},
		{KeyID: KeyID(keyBeta), Session: SessionClaims{AudioMode: "pcm16", Model: "gpt-realtime", Voice: "marin"}},
	} {
		token, _, err := issuer.Mint(time.Minute, claims)
		if err != nil {
			f.Fatal(err)
		}
		minted[token] = true
		f.Add(token)
		f.Add(token[:len(token)-1])
		f.Add(token + "A")
		f.Add(strings.Replace(token, ".", "..", 1))
		f.Add(strings.Replace(token, "current.", "old.", 1))
		f.Add(strings.Replace(token, "current.", "next.", 1))
		f.Add(strings.Replace(token, "current.", "", 1))
	}
	for _, s := range []string{
		"", TokenPrefix, TokenPrefix + ".", TokenPrefix + "current.eyJ2IjoxfQ." + strings.Repeat("A", 43),
		TokenPrefix + "unknown.eyJ2IjoxfQ." + strings.Repeat("A", 43), TokenPrefix + "..",
		"vgw_ct_" + strings.Repeat("A", MaxTokenLen), keyAlpha, "vgw_ct_\x00.\xff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, token string) {
		claims, err := issuer.Verify(token)
		if err == nil {
			if !minted[token] {
				t.Fatalf("an unminted token verified: %q", token)
			}
			if claims.SigningKeyID != SigningKeyID(token) || claims.SigningKeyID != "current" {
				t.Fatalf("claims name key %q, the token %q", claims.SigningKeyID, SigningKeyID(token))
			}
			return
		}
		switch {
		case errors.Is(err, ErrMalformedCredentials), errors.Is(err, ErrInvalidCredentials), errors.Is(err, ErrExpiredToken):
		default:
			t.Fatalf("unexpected error kind: %v", err)
		}
		if claims != (Claims{}) {
			t.Fatalf("claims returned with an error")
		}
	})
}

// countingReader yields 0, 1, 2, … so that minted token IDs are
// reproducible.
type countingReader struct{ next byte }

func (c *countingReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = c.next
		c.next++
	}
	return len(p), nil
}
