package auth

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"
)

func TestNewTokenIssuer(t *testing.T) {
	tests := []struct {
		name           string
		secret         []byte
		opts           []TokenOption
		wantErr        string
		wantDefaultTTL time.Duration
		wantMaxTTL     time.Duration
	}{
		{name: "defaults", secret: testSecret, wantDefaultTTL: DefaultTokenTTL, wantMaxTTL: DefaultMaxTokenTTL},
		{
			name:           "configured lifetimes",
			secret:         testSecret,
			opts:           []TokenOption{WithDefaultTTL(30 * time.Second), WithMaxTTL(time.Minute)},
			wantDefaultTTL: 30 * time.Second,
			wantMaxTTL:     time.Minute,
		},
		{name: "nil secret", secret: nil, wantErr: "at least 32 bytes"},
		{name: "short secret", secret: testSecret[:31], wantErr: "at least 32 bytes, got 31"},
		{name: "default above max", secret: testSecret, opts: []TokenOption{WithDefaultTTL(11 * time.Minute)}, wantErr: "default client token lifetime"},
		{name: "zero default", secret: testSecret, opts: []TokenOption{WithDefaultTTL(0)}, wantErr: "default client token lifetime"},
		{name: "sub-second max", secret: testSecret, opts: []TokenOption{WithMaxTTL(time.Millisecond)}, wantErr: "maximum client token lifetime"},
		{name: "max above limit", secret: testSecret, opts: []TokenOption{WithMaxTTL(25 * time.Hour)}, wantErr: "maximum client token lifetime"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			issuer, err := NewTokenIssuer(tt.secret, newFakeClock(), tt.opts...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if issuer.DefaultTTL() != tt.wantDefaultTTL || issuer.MaxTTL() != tt.wantMaxTTL {
				t.Fatalf("TTLs = %s, %s; want %s, %s", issuer.DefaultTTL(), issuer.MaxTTL(), tt.wantDefaultTTL, tt.wantMaxTTL)
			}
		})
	}

	t.Run("secret is copied", func(t *testing.T) {
		secret := append([]byte(nil), testSecret...)
		issuer, err := NewTokenIssuer(secret, newFakeClock())
		if err != nil {
			t.Fatal(err)
		}
		token, _, err := issuer.Mint(0, Claims{})
		if err != nil {
			t.Fatal(err)
		}
		secret[0] ^= 0xff
		if _, err := issuer.Verify(token); err != nil {
			t.Fatalf("Verify after the caller changed its slice: %v", err)
		}
	})
}

func TestMintVerifyRoundTrip(t *testing.T) {
	clk := newFakeClock()
	clk.Step(300 * time.Millisecond) // not on a second boundary
	issuer := newTestIssuer(t, clk)
	want := Claims{
		KeyID:   KeyID(keyAlpha),
		Session: SessionClaims{AudioMode: "pcm16", Model: "gpt-realtime", Voice: "marin"},
	}
	token, expiresAt, err := issuer.Mint(2*time.Minute, want)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(token, TokenPrefix) || len(token) > MaxTokenLen {
		t.Fatalf("token %q lacks the prefix or is too long", token)
	}
	if min, max := clk.Now().Add(2*time.Minute), clk.Now().Add(2*time.Minute+time.Second); expiresAt.Before(min) || !expiresAt.Before(max) {
		t.Fatalf("expiresAt = %s, want in [%s, %s)", expiresAt, min, max)
	}

	got, err := issuer.Verify(token)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if got.KeyID != want.KeyID || got.Session != want.Session {
		t.Errorf("claims = %+v, want %+v", got, want)
	}
	if !got.ExpiresAt.Equal(expiresAt) {
		t.Errorf("ExpiresAt = %s, want %s", got.ExpiresAt, expiresAt)
	}
	if !got.IssuedAt.Equal(clk.Now().Truncate(time.Second)) {
		t.Errorf("IssuedAt = %s, want %s", got.IssuedAt, clk.Now().Truncate(time.Second))
	}
	if len(got.ID) != tokenIDLen {
		t.Errorf("ID %q has length %d, want %d", got.ID, len(got.ID), tokenIDLen)
	}

	other, _, err := issuer.Mint(0, want)
	if err != nil {
		t.Fatal(err)
	}
	otherClaims, err := issuer.Verify(other)
	if err != nil {
		t.Fatal(err)
	}
	if otherClaims.ID == got.ID || other == token {
		t.Error("two mints produced the same token ID")
	}
}

func TestMintRejects(t *testing.T) {
	tests := []struct {
		name    string
		ttl     time.Duration
		claims  Claims
		wantErr error
		wantTTL time.Duration // for successful rows
	}{
		{name: "zero ttl means default", ttl: 0, wantTTL: DefaultTokenTTL},
		{name: "max ttl", ttl: DefaultMaxTokenTTL, wantTTL: DefaultMaxTokenTTL},
		{name: "sub-second ttl rounds up", ttl: 10 * time.Millisecond, wantTTL: time.Second},
		{name: "negative ttl", ttl: -time.Second, wantErr: ErrInvalidTTL},
		{name: "ttl above max", ttl: DefaultMaxTokenTTL + time.Second, wantErr: ErrInvalidTTL},
		{name: "key ID not hex", claims: Claims{KeyID: "nothex!!"}, wantErr: ErrInvalidClaims},
		{name: "key ID too long", claims: Claims{KeyID: KeyID(keyAlpha) + "00"}, wantErr: ErrInvalidClaims},
		{name: "model with a space", claims: Claims{Session: SessionClaims{Model: "gpt realtime"}}, wantErr: ErrInvalidClaims},
		{name: "voice with a quote", claims: Claims{Session: SessionClaims{Voice: `a"b`}}, wantErr: ErrInvalidClaims},
		{name: "audio mode too long", claims: Claims{Session: SessionClaims{AudioMode: strings.Repeat("a", 65)}}, wantErr: ErrInvalidClaims},
		{
			name:    "longest claims still fit",
			claims:  Claims{KeyID: KeyID(keyAlpha), Session: SessionClaims{AudioMode: strings.Repeat("a", 64), Model: strings.Repeat("m", 64), Voice: strings.Repeat("v", 64)}},
			wantTTL: DefaultTokenTTL,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			issuer := newTestIssuer(t, clk)
			token, expiresAt, err := issuer.Mint(tt.ttl, tt.claims)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || token != "" {
					t.Fatalf("Mint = %q, %v; want error %v", token, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := expiresAt.Sub(clk.Now()); got != tt.wantTTL {
				t.Fatalf("lifetime = %s, want %s", got, tt.wantTTL)
			}
		})
	}
}

func TestVerify(t *testing.T) {
	const ttl = time.Minute
	tests := []struct {
		name string
		// token builds the token to verify from an issuer on clk.
		token func(t *testing.T, issuer *TokenIssuer, clk *testingclock.FakeClock) string
		// advance moves the verifying clock after minting.
		advance time.Duration
		wantErr error
	}{
		{
			name:  "fresh token",
			token: mint(ttl),
		},
		{
			name:    "just before expiry",
			token:   mint(ttl),
			advance: ttl - time.Nanosecond,
		},
		{
			name:    "at expiry",
			token:   mint(ttl),
			advance: ttl,
			wantErr: ErrExpiredToken,
		},
		{
			name:    "long expired",
			token:   mint(ttl),
			advance: 24 * time.Hour,
			wantErr: ErrExpiredToken,
		},
		{
			name:  "issued by a replica 4s ahead",
			token: mintAhead(4*time.Second, ttl),
		},
		{
			name:    "issued by a replica 6s ahead",
			token:   mintAhead(6*time.Second, ttl),
			wantErr: ErrInvalidCredentials,
		},
		{
			name: "bit flipped in payload",
			token: func(t *testing.T, issuer *TokenIssuer, clk *testingclock.FakeClock) string {
				token := mint(ttl)(t, issuer, clk)
				payload, mac := splitToken(t, token)
				raw, err := b64.DecodeString(payload)
				if err != nil {
					t.Fatal(err)
				}
				raw[len(raw)/2] ^= 0x01
				return TokenPrefix + b64.EncodeToString(raw) + "." + mac
			},
			wantErr: ErrInvalidCredentials,
		},
		{
			name: "expiry pushed forward in payload",
			token: func(t *testing.T, issuer *TokenIssuer, clk *testingclock.FakeClock) string {
				token := mint(ttl)(t, issuer, clk)
				payload, mac := splitToken(t, token)
				raw, _ := b64.DecodeString(payload)
				forged := strings.Replace(string(raw), `"exp":`, `"exp":9`, 1)
				return TokenPrefix + b64.EncodeToString([]byte(forged)) + "." + mac
			},
			advance: 2 * ttl,
			wantErr: ErrInvalidCredentials,
		},
		{
			name: "bit flipped in MAC",
			token: func(t *testing.T, issuer *TokenIssuer, clk *testingclock.FakeClock) string {
				token := mint(ttl)(t, issuer, clk)
				payload, mac := splitToken(t, token)
				raw, err := b64.DecodeString(mac)
				if err != nil {
					t.Fatal(err)
				}
				raw[0] ^= 0x80
				return TokenPrefix + payload + "." + b64.EncodeToString(raw)
			},
			wantErr: ErrInvalidCredentials,
		},
		{
			name: "MAC in a second spelling",
			token: func(t *testing.T, issuer *TokenIssuer, clk *testingclock.FakeClock) string {
				// The last of 43 characters carries 4 data bits and 2
				// padding bits; setting a padding bit spells the same MAC
				// differently, which a lenient decoder would accept.
				token := mint(ttl)(t, issuer, clk)
				last := strings.IndexByte(b64Alphabet, token[len(token)-1])
				return token[:len(token)-1] + string(b64Alphabet[last^0x01])
			},
			wantErr: ErrMalformedCredentials,
		},
		{
			name: "minted with another secret",
			token: func(t *testing.T, _ *TokenIssuer, clk *testingclock.FakeClock) string {
				other, err := NewTokenIssuer([]byte("another-secret-another-secret-xx"), clk)
				if err != nil {
					t.Fatal(err)
				}
				return mint(ttl)(t, other, clk)
			},
			wantErr: ErrInvalidCredentials,
		},
		{
			name: "payload dropped",
			token: func(t *testing.T, issuer *TokenIssuer, clk *testingclock.FakeClock) string {
				_, mac := splitToken(t, mint(ttl)(t, issuer, clk))
				return TokenPrefix + "." + mac
			},
			wantErr: ErrMalformedCredentials,
		},
		{
			name: "MAC dropped",
			token: func(t *testing.T, issuer *TokenIssuer, clk *testingclock.FakeClock) string {
				payload, _ := splitToken(t, mint(ttl)(t, issuer, clk))
				return TokenPrefix + payload
			},
			wantErr: ErrMalformedCredentials,
		},
		{
			name:    "wrong prefix",
			token:   literal("vgw_xx_eyJ2IjoxfQ." + strings.Repeat("A", 43)),
			wantErr: ErrMalformedCredentials,
		},
		{
			name:    "prefix only",
			token:   literal(TokenPrefix),
			wantErr: ErrMalformedCredentials,
		},
		{
			name:    "empty",
			token:   literal(""),
			wantErr: ErrMalformedCredentials,
		},
		{
			name:    "MAC not base64url",
			token:   literal(TokenPrefix + "eyJ2IjoxfQ." + strings.Repeat("!", 43)),
			wantErr: ErrMalformedCredentials,
		},
		{
			name:    "oversized",
			token:   literal(TokenPrefix + strings.Repeat("A", MaxTokenLen) + "." + strings.Repeat("A", 43)),
			wantErr: ErrMalformedCredentials,
		},
		{
			name: "valid token with junk appended",
			token: func(t *testing.T, issuer *TokenIssuer, clk *testingclock.FakeClock) string {
				return mint(ttl)(t, issuer, clk) + "A"
			},
			wantErr: ErrMalformedCredentials,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			issuer := newTestIssuer(t, clk)
			token := tt.token(t, issuer, clk)
			clk.Step(tt.advance)
			claims, err := issuer.Verify(token)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Verify error = %v, want %v", err, tt.wantErr)
			}
			if claims != (Claims{}) {
				t.Errorf("claims = %+v on error, want zero", claims)
			}
			if len(token) > len(TokenPrefix)+8 && strings.Contains(err.Error(), token[len(TokenPrefix):]) {
				t.Errorf("error %q quotes the token", err)
			}
		})
	}
}

const b64Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

func mint(ttl time.Duration) func(*testing.T, *TokenIssuer, *testingclock.FakeClock) string {
	return func(t *testing.T, issuer *TokenIssuer, _ *testingclock.FakeClock) string {
		t.Helper()
		token, _, err := issuer.Mint(ttl, Claims{Session: SessionClaims{AudioMode: "pcm16"}})
		if err != nil {
			t.Fatal(err)
		}
		return token
	}
}

// mintAhead mints on an issuer whose clock runs ahead by skew, sharing the
// secret, as another replica would.
func mintAhead(skew, ttl time.Duration) func(*testing.T, *TokenIssuer, *testingclock.FakeClock) string {
	return func(t *testing.T, _ *TokenIssuer, clk *testingclock.FakeClock) string {
		t.Helper()
		ahead := testingclock.NewFakeClock(clk.Now().Add(skew))
		return mint(ttl)(t, newTestIssuer(t, ahead), ahead)
	}
}

func literal(token string) func(*testing.T, *TokenIssuer, *testingclock.FakeClock) string {
	return func(*testing.T, *TokenIssuer, *testingclock.FakeClock) string { return token }
}

func splitToken(t *testing.T, token string) (payload, mac string) {
	t.Helper()
	body, ok := strings.CutPrefix(token, TokenPrefix)
	if !ok {
		t.Fatalf("token lacks prefix")
	}
	payload, mac, ok = strings.Cut(body, ".")
	if !ok {
		t.Fatalf("token lacks a dot")
	}
	return payload, mac
}

func TestLoadSecretFile(t *testing.T) {
	const textSecret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA=="
	tests := []struct {
		name    string
		content string
		want    string
		wantErr string
	}{
		{name: "trailing newline trimmed", content: textSecret + "\n", want: textSecret},
		{name: "CRLF and spaces trimmed", content: "  " + textSecret + "\r\n", want: textSecret},
		{name: "too short after trimming", content: "  short-secret  \n", wantErr: "at least 32 bytes"},
		{name: "too large", content: strings.Repeat("x", maxSecretFileSize+1), wantErr: "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "secret")
			writeFile(t, path, tt.content)
			got, err := LoadSecretFile(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), strings.TrimSpace(tt.content)) {
					t.Fatalf("error quotes the secret")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Fatalf("secret = %q, want %q", got, tt.want)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		if _, err := LoadSecretFile(filepath.Join(t.TempDir(), "absent")); err == nil {
			t.Fatal("no error for a missing file")
		}
	})
}

func TestSharedSecretWorksAcrossIssuers(t *testing.T) {
	clk := newFakeClock()
	podA, podB := newTestIssuer(t, clk), newTestIssuer(t, clk)
	token, _, err := podA.Mint(0, Claims{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := podB.Verify(token); err != nil {
		t.Fatalf("a token minted on one replica fails on another with the same secret: %v", err)
	}

	generated, err := GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	if len(generated) != MinSecretLen {
		t.Fatalf("GenerateSecret returned %d bytes, want %d", len(generated), MinSecretLen)
	}
	restarted, err := NewTokenIssuer(generated, clk)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := restarted.Verify(token); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("Verify on an issuer with a generated secret = %v, want ErrInvalidCredentials", err)
	}
}
