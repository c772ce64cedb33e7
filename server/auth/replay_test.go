package auth

import (
	"strconv"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"
)

func TestTokenUses(t *testing.T) {
	clk := testingclock.NewFakePassiveClock(time.Unix(1_800_000_000, 0))
	u := NewTokenUses(2, clk)
	exp := clk.Now().Add(time.Minute)
	for i := range 2 {
		if _, ok := u.Use("tok-a", exp); !ok {
			t.Fatalf("use %d of 2 refused", i+1)
		}
	}
	if _, ok := u.Use("tok-a", exp); ok {
		t.Fatal("a third use of a token allowed two granted")
	}
	if _, ok := u.Use("tok-b", exp); !ok {
		t.Fatal("another token refused")
	}
	// A use given back (the session was refused after the upgrade) may be
	// taken again, once.
	release, ok := u.Use("tok-c", exp)
	if !ok {
		t.Fatal("tok-c refused")
	}
	u.Use("tok-c", exp)
	release()
	release()
	if _, ok := u.Use("tok-c", exp); !ok {
		t.Fatal("a use given back is not available again")
	}
	if _, ok := u.Use("tok-c", exp); ok {
		t.Fatal("releasing twice gave back two uses")
	}
	// After the token expired its entry goes; the token itself is refused
	// by Verify then, so nothing is lost.
	clk.SetTime(exp.Add(time.Second))
	if tracked, _ := u.Stats(); tracked != 0 {
		t.Fatalf("%d tokens tracked after all expired", tracked)
	}
}

// TestTokenUsesIsBounded: the cache never holds more than its capacity; a
// full cache drops the oldest entry and counts it.
func TestTokenUsesIsBounded(t *testing.T) {
	clk := testingclock.NewFakePassiveClock(time.Unix(1_800_000_000, 0))
	u := newTokenUses(1, 100, clk)
	exp := clk.Now().Add(10 * time.Minute)
	for i := range 250 {
		if _, ok := u.Use("tok-"+strconv.Itoa(i), exp); !ok {
			t.Fatalf("fresh token %d refused", i)
		}
	}
	tracked, evictions := u.Stats()
	if tracked != 100 || evictions != 150 || len(u.uses) != 100 {
		t.Fatalf("tracked %d (map %d), evictions %d; want 100 and 150", tracked, len(u.uses), evictions)
	}
	// The newest are still refused on reuse; the oldest were dropped.
	if _, ok := u.Use("tok-249", exp); ok {
		t.Fatal("a tracked token reused")
	}
	if _, ok := u.Use("tok-0", exp); !ok {
		t.Fatal("an evicted token is still tracked")
	}
	// Expired entries go first, without counting as evictions.
	clk.SetTime(exp)
	u.Use("fresh", exp.Add(time.Minute))
	if tracked, evictions := u.Stats(); tracked != 1 || evictions != 151 {
		t.Fatalf("tracked %d, evictions %d after expiry; want 1 and 151", tracked, evictions)
	}
}
