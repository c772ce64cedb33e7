package auth

import (
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/voicegateway/voicegateway/internal/testkit"
	"github.com/voicegateway/voicegateway/server/fleet"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testEpoch is an arbitrary, whole-second instant that fake clocks start at.
var testEpoch = time.Date(2025, time.March, 14, 9, 26, 53, 0, time.UTC)

// Keys used across tests; long enough to pass MinKeyLen.
const (
	keyAlpha = "sk-alpha-0123456789abcdef"
	keyBeta  = "sk-beta-0123456789abcdef0"
	keyGamma = "sk-gamma-0123456789abcdef"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef")

// testKeyID names the one key of testKeyring.
const testKeyID = "test"

// testKeyring holds one signing key, testSecret, valid at every time.
func testKeyring(t testing.TB) *Keyring {
	t.Helper()
	return keyringOf(t, fleet.TokenKey{ID: testKeyID, Secret: b64.EncodeToString(testSecret), Created: testEpoch})
}

func keyringOf(t testing.TB, keys ...fleet.TokenKey) *Keyring {
	t.Helper()
	ring, err := NewKeyring(fleet.TokenKeys{Keys: keys})
	if err != nil {
		t.Fatalf("NewKeyring: %v", err)
	}
	return ring
}

func newFakeClock() *testingclock.FakeClock {
	return testingclock.NewFakeClock(testEpoch)
}

func newTestIssuer(t testing.TB, clk *testingclock.FakeClock) *TokenIssuer {
	t.Helper()
	issuer, err := NewTokenIssuer(testKeyring(t), clk)
	if err != nil {
		t.Fatalf("NewTokenIssuer: %v", err)
	}
	return issuer
}

func writeKeyFile(t testing.TB, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys")
	testkit.ReplaceFile(t, path, content)
	return path
}
