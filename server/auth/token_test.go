package auth

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"

	"github.com/voicegateway/voicegateway/internal/testkit"
	"github.com/voicegateway/voicegateway/server/fleet"
)

func TestNewTokenIssuer(t *testing.T) {
	tests := []struct {
		name           string
		keys           KeySource
		opts           []TokenOption
		wantErr        string
		wantDefaultTTL time.Duration
		wantMaxTTL     time.Duration
	}{
		{name: "defaults", keys: testKeyring(t), wantDefaultTTL: DefaultTokenTTL, wantMaxTTL: DefaultMaxTokenTTL},
		{
			name:           "configured lifetimes",
			keys:           testKeyring(t),
			opts:           []TokenOption{WithDefaultTTL(30 * time.Second), WithMaxTTL(time.Minute)},
			wantDefaultTTL: 30 * time.Second,
			wantMaxTTL:     time.Minute,
		},
		{name: "no keys", keys: nil, wantErr: "need a keyring"},
		{name: "nil keyring", keys: (*Keyring)(nil), wantErr: "need a keyring"},
		{name: "default above max", keys: testKeyring(t), opts: []TokenOption{WithDefaultTTL(11 * time.Minute)}, wantErr: "default client token lifetime"},
		{name: "zero default", keys: testKeyring(t), opts: []TokenOption{WithDefaultTTL(0)}, wantErr: "default client token lifetime"},
		{name: "sub-second max", keys: testKeyring(t), opts: []TokenOption{WithMaxTTL(time.Millisecond)}, wantErr: "maximum client token lifetime"},
		{name: "max above limit", keys: testKeyring(t), opts: []TokenOption{WithMaxTTL(25 * time.Hour)}, wantErr: "maximum client token lifetime"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			issuer, err := NewTokenIssuer(tt.keys, newFakeClock(), tt.opts...)
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
				return TokenPrefix + testKeyID + "." + b64.EncodeToString(raw) + "." + mac
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
				return TokenPrefix + testKeyID + "." + b64.EncodeToString([]byte(forged)) + "." + mac
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
				return TokenPrefix + testKeyID + "." + payload + "." + b64.EncodeToString(raw)
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
			name: "minted with another secret under the same key id",
			token: func(t *testing.T, _ *TokenIssuer, clk *testingclock.FakeClock) string {
				other, err := NewTokenIssuer(keyringOf(t, fleet.TokenKey{ID: testKeyID, Secret: b64.EncodeToString([]byte("another-secret-another-secret-xx"))}), clk)
				if err != nil {
					t.Fatal(err)
				}
				return mint(ttl)(t, other, clk)
			},
			wantErr: ErrInvalidCredentials,
		},
		{
			name: "minted with a key this issuer does not hold",
			token: func(t *testing.T, _ *TokenIssuer, clk *testingclock.FakeClock) string {
				other, err := NewTokenIssuer(keyringOf(t, fleet.TokenKey{ID: "elsewhere", Secret: b64.EncodeToString(testSecret)}), clk)
				if err != nil {
					t.Fatal(err)
				}
				return mint(ttl)(t, other, clk)
			},
			wantErr: ErrInvalidCredentials,
		},
		{
			name: "key id swapped for another the issuer holds",
			token: func(t *testing.T, issuer *TokenIssuer, clk *testingclock.FakeClock) string {
				payload, mac := splitToken(t, mint(ttl)(t, issuer, clk))
				return TokenPrefix + "test2." + payload + "." + mac
			},
			wantErr: ErrInvalidCredentials,
		},
		{
			name: "key id not a key id",
			token: func(t *testing.T, issuer *TokenIssuer, clk *testingclock.FakeClock) string {
				payload, mac := splitToken(t, mint(ttl)(t, issuer, clk))
				return TokenPrefix + "TEST." + payload + "." + mac
			},
			wantErr: ErrMalformedCredentials,
		},
		{
			name: "key id dropped",
			token: func(t *testing.T, issuer *TokenIssuer, clk *testingclock.FakeClock) string {
				payload, mac := splitToken(t, mint(ttl)(t, issuer, clk))
				return TokenPrefix + payload + "." + mac
			},
			wantErr: ErrMalformedCredentials,
		},
		{
			name: "payload dropped",
			token: func(t *testing.T, issuer *TokenIssuer, clk *testingclock.FakeClock) string {
				_, mac := splitToken(t, mint(ttl)(t, issuer, clk))
				return TokenPrefix + testKeyID + ".." + mac
			},
			wantErr: ErrMalformedCredentials,
		},
		{
			name: "MAC dropped",
			token: func(t *testing.T, issuer *TokenIssuer, clk *testingclock.FakeClock) string {
				payload, _ := splitToken(t, mint(ttl)(t, issuer, clk))
				return TokenPrefix + testKeyID + "." + payload
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
			token:   literal(TokenPrefix + testKeyID + ".eyJ2IjoxfQ." + strings.Repeat("!", 43)),
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
			// The issuer also holds a second key, so that swapping key ids
			// within one keyring is tried.
			issuer, err := NewTokenIssuer(keyringOf(t,
				fleet.TokenKey{ID: testKeyID, Secret: b64.EncodeToString(testSecret)},
				fleet.TokenKey{ID: "test2", Secret: b64.EncodeToString([]byte("a-second-secret-a-second-secret-"))},
			), clk)
			if err != nil {
				t.Fatal(err)
			}
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

// splitToken returns a token's payload and MAC, without its key id.
func splitToken(t *testing.T, token string) (payload, mac string) {
	t.Helper()
	body, ok := strings.CutPrefix(token, TokenPrefix+testKeyID+".")
	if !ok {
		t.Fatalf("token lacks the prefix and key id")
	}
	payload, mac, ok = strings.Cut(body, ".")
	if !ok {
		t.Fatalf("token lacks a dot")
	}
	return payload, mac
}

// TestRotationAcrossReplicas runs two issuers, as two replicas would, over
// one token-keys.json that is rotated the way the operator rotates it: a
// token minted before the rotation verifies on both until it expires, the
// new key signs only from its sign_from, and the replaced key stops
// verifying at its verify_until.
func TestRotationAcrossReplicas(t *testing.T) {
	clk := newFakeClock()
	dir := t.TempDir()
	path := filepath.Join(dir, fleet.TokenKeysFile)
	data, err := fleet.Generate(nil, clk.Now(), false)
	if err != nil {
		t.Fatal(err)
	}
	testkit.ReplaceFile(t, path, string(data[fleet.TokenKeysFile]))
	replica := func() (*TokenIssuer, *SecretFile[*Keyring]) {
		file, err := NewSecretFile(path, ParseKeyring)
		if err != nil {
			t.Fatal(err)
		}
		issuer, err := NewTokenIssuer(file, clk)
		if err != nil {
			t.Fatal(err)
		}
		return issuer, file
	}
	podA, fileA := replica()
	podB, fileB := replica()
	before, _, err := podA.Mint(DefaultMaxTokenTTL, Claims{})
	if err != nil {
		t.Fatal(err)
	}
	firstID := SigningKeyID(before)
	if _, err := podB.Verify(before); err != nil {
		t.Fatalf("a token minted on one replica fails on the other: %v", err)
	}

	keys, _ := fleet.ParseTokenKeys(data[fleet.TokenKeysFile])
	rotation := fleet.Rotation{Activation: 2 * time.Minute, Retain: DefaultMaxTokenTTL + time.Minute}
	rotated, err := keys.Rotate(nil, clk.Now(), rotation)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := rotated.Marshal()
	testkit.ReplaceFile(t, path, string(out))
	// Replica A sees the new file at once, B only after a while, as the
	// kubelet updates pods one by one.
	if changed, err := fileA.Reload(); err != nil || !changed {
		t.Fatalf("Reload = %v, %v", changed, err)
	}
	during, _, err := podA.Mint(0, Claims{})
	if err != nil {
		t.Fatal(err)
	}
	if SigningKeyID(during) != firstID {
		t.Fatalf("a replica signed with the new key before its sign_from: %s", SigningKeyID(during))
	}
	if _, err := podB.Verify(during); err != nil {
		t.Fatalf("the replica that has not seen the rotation refuses a token minted during it: %v", err)
	}

	clk.Step(rotation.Activation)
	if _, err := fileB.Reload(); err != nil {
		t.Fatal(err)
	}
	after, _, err := podB.Mint(0, Claims{})
	if err != nil {
		t.Fatal(err)
	}
	if SigningKeyID(after) == firstID || SigningKeyID(after) != rotated.Keys[0].ID {
		t.Fatalf("after activation a token is signed with %q, want the new key %q", SigningKeyID(after), rotated.Keys[0].ID)
	}
	for name, pod := range map[string]*TokenIssuer{"A": podA, "B": podB} {
		for _, token := range []string{before, after} {
			if _, err := pod.Verify(token); err != nil {
				t.Fatalf("replica %s refuses a token signed with %s: %v", name, SigningKeyID(token), err)
			}
		}
	}

	// The old key verifies until its verify_until; by then every token it
	// signed has expired anyway, and a forged lifetime cannot outlive it.
	clk.Step(rotation.Retain)
	if _, err := podA.Verify(before); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("a token of the retired key = %v, want ErrInvalidCredentials", err)
	}
	if _, _, err := podA.Mint(0, Claims{}); err != nil {
		t.Fatalf("minting after the retirement: %v", err)
	}
}

func TestMintWithoutActiveKey(t *testing.T) {
	clk := newFakeClock()
	future := clk.Now().Add(time.Hour)
	issuer, err := NewTokenIssuer(keyringOf(t, fleet.TokenKey{ID: "later", Secret: b64.EncodeToString(testSecret), SignFrom: &future}), clk)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := issuer.Mint(0, Claims{}); !errors.Is(err, ErrNoSigningKey) {
		t.Fatalf("Mint = %v, want ErrNoSigningKey", err)
	}
}

func TestLocalKeyring(t *testing.T) {
	clk := newFakeClock()
	a, err := LocalKeyring(clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := LocalKeyring(clk.Now())
	podA, _ := NewTokenIssuer(a, clk)
	podB, _ := NewTokenIssuer(b, clk)
	token, _, err := podA.Mint(0, Claims{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := podA.Verify(token); err != nil {
		t.Fatal(err)
	}
	if _, err := podB.Verify(token); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("a token of one process's own key verified elsewhere: %v", err)
	}
}

// TestKeyRefreshOnUnknownKey: a replica that has not polled a rotated key
// file yet reads it when a token names a key it lacks, at most once per
// interval, so that bad tokens cannot make it read the disk per request.
func TestKeyRefreshOnUnknownKey(t *testing.T) {
	clk := newFakeClock()
	path := filepath.Join(t.TempDir(), fleet.TokenKeysFile)
	data, err := fleet.Generate(nil, clk.Now(), false)
	if err != nil {
		t.Fatal(err)
	}
	testkit.ReplaceFile(t, path, string(data[fleet.TokenKeysFile]))
	file, err := NewSecretFile(path, ParseKeyring)
	if err != nil {
		t.Fatal(err)
	}
	refreshes := 0
	lagging, err := NewTokenIssuer(file, clk, WithKeyRefresh(func() bool {
		refreshes++
		return file.Refresh(clk.Now(), time.Second)
	}))
	if err != nil {
		t.Fatal(err)
	}
	// A hand-rotated file whose new key signs at once (activation 0).
	keys, _ := fleet.ParseTokenKeys(data[fleet.TokenKeysFile])
	rotated, err := keys.Rotate(nil, clk.Now(), fleet.Rotation{Retain: DefaultMaxTokenTTL + IssuedAtSkew})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := rotated.Marshal()
	ahead, err := NewTokenIssuer(keyringOf(t, rotated.Keys...), clk)
	if err != nil {
		t.Fatal(err)
	}
	token, _, err := ahead.Mint(0, Claims{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lagging.Verify(token); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("before the file changed: %v, want ErrInvalidCredentials", err)
	}
	testkit.ReplaceFile(t, path, string(out))
	// Within the interval of the last refresh the file is not read.
	if _, err := lagging.Verify(token); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("a second refresh within the interval: %v", err)
	}
	clk.Step(time.Second)
	if claims, err := lagging.Verify(token); err != nil || claims.SigningKeyID != rotated.Keys[0].ID {
		t.Fatalf("after the interval the lagging replica refused the new key's token: %+v, %v", claims, err)
	}
	if refreshes != 3 {
		t.Errorf("refresh asked %d times, want 3 (one per token naming an unknown key)", refreshes)
	}
}

// TestLegacyPrefixVerifies: a token of an earlier release (vgw_ct_…, signed
// over that prefix) still verifies, so that a rollout strands none; the same
// token with its prefix swapped does not (the MAC covers the prefix).
func TestLegacyPrefixVerifies(t *testing.T) {
	clk := newFakeClock()
	issuer, err := NewTokenIssuer(testKeyring(t), clk)
	if err != nil {
		t.Fatal(err)
	}
	token, _, err := issuer.Mint(0, Claims{Session: SessionClaims{Model: "gpt-realtime"}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(token, "ek_") || !IsClientToken(token) {
		t.Fatalf("token %.12s… does not start with ek_", token)
	}
	// Re-sign the same key id and payload under the legacy prefix.
	rest := strings.TrimPrefix(token, TokenPrefix)
	signed := LegacyTokenPrefix + rest[:strings.LastIndexByte(rest, '.')]
	key := issuer.keys.Value().lookup(SigningKeyID(token))
	legacy := signed + "." + b64.EncodeToString(sign(key.secret, signed))
	claims, err := issuer.Verify(legacy)
	if err != nil || claims.Session.Model != "gpt-realtime" {
		t.Fatalf("legacy token: %+v, %v", claims, err)
	}
	if SigningKeyID(legacy) != SigningKeyID(token) {
		t.Errorf("key ids %q and %q differ", SigningKeyID(legacy), SigningKeyID(token))
	}
	swapped := LegacyTokenPrefix + rest
	if _, err := issuer.Verify(swapped); !errors.Is(err, ErrInvalidCredentials) {
		t.Errorf("a token with its prefix swapped: %v, want invalid", err)
	}
}
