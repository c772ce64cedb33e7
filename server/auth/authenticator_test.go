package auth

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"

	"github.com/voicegateway/voicegateway/internal/testkit"
)

func TestAuthenticate(t *testing.T) {
	type fixture struct {
		auth   *Authenticator
		clk    *testingclock.FakeClock
		issuer *TokenIssuer
		path   string
	}
	setup := func(t *testing.T) fixture {
		t.Helper()
		path := writeKeyFile(t, keyAlpha+"\n"+keyBeta+"\n")
		keys, err := NewKeyStore(path)
		if err != nil {
			t.Fatal(err)
		}
		clk := newFakeClock()
		issuer := newTestIssuer(t, clk)
		return fixture{auth: &Authenticator{Keys: keys, Tokens: issuer}, clk: clk, issuer: issuer, path: path}
	}
	mintFor := func(t *testing.T, f fixture, keyID string) string {
		t.Helper()
		token, _, err := f.issuer.Mint(time.Minute, Claims{KeyID: keyID, Session: SessionClaims{AudioMode: "pcm16"}})
		if err != nil {
			t.Fatal(err)
		}
		return token
	}

	tests := []struct {
		name string
		// prepare returns the request's Authorization, subprotocol lines and
		// query, and may change the fixture (time, key file, configuration).
		prepare    func(t *testing.T, f *fixture) (authorization, protocols []string, rawQuery string)
		wantErr    error
		wantReason string
		want       func(f fixture) Principal // for successful rows; ExpiresAt and TokenID checked separately
	}{
		{
			name: "valid API key",
			prepare: func(t *testing.T, f *fixture) ([]string, []string, string) {
				return []string{"Bearer " + keyBeta}, nil, ""
			},
			want: func(fixture) Principal {
				return Principal{Kind: KindAPIKey, Source: SourceHeader, KeyID: KeyID(keyBeta)}
			},
		},
		{
			name: "unknown API key",
			prepare: func(t *testing.T, f *fixture) ([]string, []string, string) {
				return []string{"Bearer " + keyGamma}, nil, ""
			},
			wantErr:    ErrInvalidCredentials,
			wantReason: ReasonInvalid,
		},
		{
			name: "valid client token in subprotocol",
			prepare: func(t *testing.T, f *fixture) ([]string, []string, string) {
				return nil, []string{"realtime, " + SubprotocolOpenAIKeyPrefix + mintFor(t, *f, KeyID(keyAlpha))}, ""
			},
			want: func(fixture) Principal {
				return Principal{Kind: KindClientToken, Source: SourceSubprotocol, KeyID: KeyID(keyAlpha), Session: SessionClaims{AudioMode: "pcm16"}}
			},
		},
		{
			name: "valid client token in query without a minting key",
			prepare: func(t *testing.T, f *fixture) ([]string, []string, string) {
				return nil, nil, "token=" + mintFor(t, *f, "")
			},
			want: func(fixture) Principal {
				return Principal{Kind: KindClientToken, Source: SourceQuery, Session: SessionClaims{AudioMode: "pcm16"}}
			},
		},
		{
			name: "expired client token",
			prepare: func(t *testing.T, f *fixture) ([]string, []string, string) {
				token := mintFor(t, *f, KeyID(keyAlpha))
				f.clk.Step(time.Minute)
				return []string{"Bearer " + token}, nil, ""
			},
			wantErr:    ErrExpiredToken,
			wantReason: ReasonExpired,
		},
		{
			name: "client token whose minting key was removed",
			prepare: func(t *testing.T, f *fixture) ([]string, []string, string) {
				token := mintFor(t, *f, KeyID(keyAlpha))
				testkit.ReplaceFile(t, f.path, keyBeta+"\n")
				if err := f.auth.Keys.Reload(); err != nil {
					t.Fatal(err)
				}
				return []string{"Bearer " + token}, nil, ""
			},
			wantErr:    ErrInvalidCredentials,
			wantReason: ReasonInvalid,
		},
		{
			name: "client token when tokens are disabled",
			prepare: func(t *testing.T, f *fixture) ([]string, []string, string) {
				token := mintFor(t, *f, "")
				f.auth.Tokens = nil
				return nil, nil, "token=" + token
			},
			wantErr:    ErrInvalidCredentials,
			wantReason: ReasonInvalid,
		},
		{
			name: "API key when no key file is configured",
			prepare: func(t *testing.T, f *fixture) ([]string, []string, string) {
				f.auth.Keys = nil
				return []string{"Bearer " + keyAlpha}, nil, ""
			},
			wantErr:    ErrInvalidCredentials,
			wantReason: ReasonInvalid,
		},
		{
			name: "client token without a key file skips the revocation check",
			prepare: func(t *testing.T, f *fixture) ([]string, []string, string) {
				f.auth.Keys = nil
				return []string{"Bearer " + mintFor(t, *f, KeyID(keyGamma))}, nil, ""
			},
			want: func(fixture) Principal {
				return Principal{Kind: KindClientToken, Source: SourceHeader, KeyID: KeyID(keyGamma), Session: SessionClaims{AudioMode: "pcm16"}}
			},
		},
		{
			name: "forged client token",
			prepare: func(t *testing.T, f *fixture) ([]string, []string, string) {
				return nil, nil, "token=" + TokenPrefix + testKeyID + ".eyJ2IjoxfQ." + strings.Repeat("A", 43)
			},
			wantErr:    ErrInvalidCredentials,
			wantReason: ReasonInvalid,
		},
		{
			name: "API key in query",
			prepare: func(t *testing.T, f *fixture) ([]string, []string, string) {
				return nil, nil, "token=" + keyAlpha
			},
			wantErr:    ErrMalformedCredentials,
			wantReason: ReasonMalformed,
		},
		{
			name: "no credentials",
			prepare: func(t *testing.T, f *fixture) ([]string, []string, string) {
				return nil, []string{"realtime"}, ""
			},
			wantErr:    ErrMissingCredentials,
			wantReason: ReasonMissing,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := setup(t)
			authorization, protocols, rawQuery := tt.prepare(t, &f)
			got, err := f.auth.Authenticate(request(authorization, protocols, rawQuery))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("error = %v, want %v", err, tt.wantErr)
				}
				if r := Reason(err); r != tt.wantReason {
					t.Fatalf("Reason = %q, want %q", r, tt.wantReason)
				}
				if got != (Principal{}) {
					t.Fatalf("principal %+v returned with an error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Authenticate: %v", err)
			}
			want := tt.want(f)
			if got.Kind == KindClientToken {
				if got.TokenID == "" || got.ExpiresAt.IsZero() {
					t.Fatalf("client token principal lacks TokenID or ExpiresAt: %+v", got)
				}
				want.TokenID, want.ExpiresAt = got.TokenID, got.ExpiresAt
			}
			if got != want {
				t.Fatalf("principal = %+v, want %+v", got, want)
			}
			if s := fmt.Sprintf("%+v", got); strings.Contains(s, keyAlpha) || strings.Contains(s, keyBeta) || strings.Contains(s, TokenPrefix) {
				t.Fatalf("principal holds a secret: %s", s)
			}
		})
	}
}

func TestReason(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{name: "nil", err: nil, want: ""},
		{name: "missing", err: ErrMissingCredentials, want: ReasonMissing},
		{name: "wrapped malformed", err: fmt.Errorf("upgrade: %w", malformed("x")), want: ReasonMalformed},
		{name: "invalid", err: errInvalid("x"), want: ReasonInvalid},
		{name: "expired", err: fmt.Errorf("%w: old", ErrExpiredToken), want: ReasonExpired},
		{name: "unrelated error", err: errors.New("disk full"), want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Reason(tt.err); got != tt.want {
				t.Fatalf("Reason(%v) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}
