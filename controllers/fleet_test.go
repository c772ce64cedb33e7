package controllers

import (
	"bytes"
	"crypto/rand"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/voicegateway/voicegateway/server/auth"
	"github.com/voicegateway/voicegateway/server/config"
	"github.com/voicegateway/voicegateway/server/fleet"
)

func generatedFleet(t *testing.T, now time.Time, withAPIKey bool) map[string][]byte {
	t.Helper()
	data, err := fleet.Generate(rand.Reader, now, withAPIKey)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func tokenKeys(t *testing.T, data map[string][]byte) fleet.TokenKeys {
	t.Helper()
	keys, err := fleet.ParseTokenKeys(data[fleet.TokenKeysFile])
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// sameFiles fails unless every named file of want is in got byte for byte.
func sameFiles(t *testing.T, got, want map[string][]byte, files ...string) {
	t.Helper()
	for _, file := range files {
		if !bytes.Equal(got[file], want[file]) {
			t.Errorf("%s changed", file)
		}
	}
}

func TestPlanFleetSecret(t *testing.T) {
	created := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	rotation := fleet.Rotation{Activation: 2 * time.Minute, Retain: fleet.DefaultRotation.Retain}
	policy := func(now time.Time) fleetPolicy {
		return fleetPolicy{now: now, random: rand.Reader, withAPIKey: true, rotation: rotation}
	}
	allFiles := []string{fleet.TokenKeysFile, fleet.AdminTokenFile, fleet.FleetKeyFile, fleet.APIKeysFile}

	t.Run("nothing to do changes nothing", func(t *testing.T) {
		data := generatedFleet(t, created, true)
		data["note"] = []byte("kept")
		p := policy(created.Add(24 * time.Hour))
		p.rotateRequest = "r1"
		c, err := planFleetSecret(data, "r1", p)
		if err != nil {
			t.Fatal(err)
		}
		if c.changed || c.rotated != nil || len(c.repaired) > 0 || len(c.pruned) > 0 || !c.next.IsZero() || c.rotatedFor != "r1" {
			t.Errorf("change = %+v, want none", c)
		}
		sameFiles(t, c.data, data, append(allFiles, "note")...)
	})

	t.Run("a rotation waits while the keys that verify fill the file", func(t *testing.T) {
		data := generatedFleet(t, created, true)
		keys := tokenKeys(t, data)
		now := created.Add(time.Hour)
		// Rotate with a long retention until the file is full.
		long := fleet.Rotation{Activation: time.Minute, Retain: 24 * time.Hour}
		for i := 0; len(keys.Keys) < fleet.MaxTokenKeys; i++ {
			now = now.Add(long.Activation + time.Second)
			var err error
			if keys, err = keys.Rotate(rand.Reader, now, long); err != nil {
				t.Fatal(err)
			}
		}
		now = now.Add(long.Activation + time.Second)
		full, _ := keys.Marshal()
		data[fleet.TokenKeysFile] = full
		p := policy(now)
		p.rotateRequest = "again"
		c, err := planFleetSecret(data, "before", p)
		if err != nil {
			t.Fatal(err)
		}
		next, _ := keys.NextPrune()
		if !c.deferred || c.rotated != nil || c.rotatedFor != "before" || c.changed || !c.next.Equal(next) {
			t.Fatalf("change = %+v, want a deferred rotation, the request still pending, a look at %v", c, next)
		}
	})

	t.Run("a new rotate-keys value rotates once", func(t *testing.T) {
		data := generatedFleet(t, created, true)
		old := tokenKeys(t, data).Keys[0]
		now := created.Add(time.Hour)
		p := policy(now)
		p.rotateRequest = "2026-03-01"
		c, err := planFleetSecret(data, "", p)
		if err != nil {
			t.Fatal(err)
		}
		if !c.changed || c.rotated == nil || c.rotatedFor != "2026-03-01" || !strings.Contains(c.cause, "annotation") {
			t.Fatalf("change = %+v, want a rotation recorded for the request", c)
		}
		sameFiles(t, c.data, data, fleet.AdminTokenFile, fleet.FleetKeyFile, fleet.APIKeysFile)
		keys := tokenKeys(t, c.data)
		if len(keys.Keys) != 2 || keys.Keys[0].ID != c.rotated.ID || keys.Keys[1].ID != old.ID || keys.Keys[1].Secret != old.Secret {
			t.Fatalf("keys = %+v, want the new key and the old one", keys.Keys)
		}
		signFrom := now.Add(2 * time.Minute)
		fresh, retired := keys.Keys[0], keys.Keys[1]
		if fresh.SignFrom == nil || !fresh.SignFrom.Equal(signFrom) || fresh.VerifyUntil != nil {
			t.Errorf("new key signs from %v until %v, want from %s (the activation delay) with no end", fresh.SignFrom, fresh.VerifyUntil, signFrom)
		}
		// The old key outlives every token it may still sign: it signs
		// until the new key takes over, and such a token lives at most
		// the longest client-token lifetime.
		if retired.VerifyUntil == nil || !retired.VerifyUntil.Equal(signFrom.Add(fleet.DefaultRotation.Retain)) ||
			retired.VerifyUntil.Before(signFrom.Add(10*time.Minute+5*time.Second)) {
			t.Errorf("old key verifies until %v, want %s", retired.VerifyUntil, signFrom.Add(fleet.DefaultRotation.Retain))
		}
		if signing, _ := keys.Signing(now); signing.ID != old.ID {
			t.Errorf("at once %s signs, want the old key until every pod knows the new one", signing.ID)
		}
		if signing, _ := keys.Signing(signFrom); signing.ID != fresh.ID {
			t.Errorf("after the activation delay %s signs, want the new key", signing.ID)
		}
		if !c.next.Equal(*retired.VerifyUntil) {
			t.Errorf("next look at %s, want when the old key expires (%s)", c.next, retired.VerifyUntil)
		}

		// The same value again, or none, changes nothing.
		for _, request := range []string{"2026-03-01", ""} {
			p := policy(now.Add(time.Minute))
			p.rotateRequest = request
			again, err := planFleetSecret(c.data, c.rotatedFor, p)
			if err != nil {
				t.Fatal(err)
			}
			if again.changed || again.rotated != nil {
				t.Errorf("request %q after the rotation: change = %+v, want none", request, again)
			}
		}

		// Once the old key's tokens have expired, it is dropped.
		p = policy(retired.VerifyUntil.Add(time.Second))
		p.rotateRequest = "2026-03-01"
		pruned, err := planFleetSecret(c.data, c.rotatedFor, p)
		if err != nil {
			t.Fatal(err)
		}
		if !pruned.changed || !slices.Equal(pruned.pruned, []string{old.ID}) || pruned.rotated != nil {
			t.Fatalf("change = %+v, want the old key pruned", pruned)
		}
		if keys := tokenKeys(t, pruned.data); len(keys.Keys) != 1 || keys.Keys[0].ID != fresh.ID {
			t.Errorf("keys after pruning = %+v", keys.Keys)
		}
		if !pruned.next.IsZero() {
			t.Errorf("next look at %s, want none", pruned.next)
		}
	})

	t.Run("rotation period", func(t *testing.T) {
		data := generatedFleet(t, created, true)
		p := policy(created.Add(23 * time.Hour))
		p.rotationPeriod = 24 * time.Hour
		early, err := planFleetSecret(data, "", p)
		if err != nil {
			t.Fatal(err)
		}
		if early.changed || !early.next.Equal(created.Add(24*time.Hour)) {
			t.Errorf("before the period: change = %+v, want none and a look when it ends", early)
		}
		p.now = created.Add(24 * time.Hour)
		due, err := planFleetSecret(data, "", p)
		if err != nil {
			t.Fatal(err)
		}
		if !due.changed || due.rotated == nil || !strings.Contains(due.cause, "keyRotationPeriod") || due.rotatedFor != "" {
			t.Errorf("at the period: change = %+v, want a rotation", due)
		}
		// The old key's end comes before the next period.
		if retiring := due.retiring[0]; !due.next.Equal(*retiring.VerifyUntil) {
			t.Errorf("next look at %s, want %s", due.next, retiring.VerifyUntil)
		}
	})

	t.Run("missing and invalid files are made anew, the rest kept", func(t *testing.T) {
		data := generatedFleet(t, created, false)
		delete(data, fleet.AdminTokenFile)
		data[fleet.FleetKeyFile] = []byte("too short")
		c, err := planFleetSecret(data, "", policy(created))
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(c.repaired)
		if !c.changed || !slices.Equal(c.repaired, []string{fleet.AdminTokenFile, fleet.APIKeysFile, fleet.FleetKeyFile}) {
			t.Errorf("change = %+v, want admin-token, fleet-key and api-keys made", c)
		}
		sameFiles(t, c.data, data, fleet.TokenKeysFile)
		if err := fleet.Check(c.data, true); err != nil {
			t.Errorf("repaired Secret: %v", err)
		}
	})

	t.Run("no api key without need", func(t *testing.T) {
		data := generatedFleet(t, created, false)
		p := policy(created)
		p.withAPIKey = false
		c, err := planFleetSecret(data, "", p)
		if err != nil {
			t.Fatal(err)
		}
		if c.changed || c.data[fleet.APIKeysFile] != nil {
			t.Errorf("change = %+v, want none", c)
		}
	})

	t.Run("new keys answer a pending request", func(t *testing.T) {
		data := generatedFleet(t, created, true)
		data[fleet.TokenKeysFile] = []byte(`{"keys":[]}`)
		p := policy(created)
		p.rotateRequest = "r2"
		c, err := planFleetSecret(data, "r1", p)
		if err != nil {
			t.Fatal(err)
		}
		if !c.changed || c.rotated != nil || c.rotatedFor != "r2" || !slices.Equal(c.repaired, []string{fleet.TokenKeysFile}) {
			t.Errorf("change = %+v, want new keys, no rotation, the request recorded", c)
		}
		if keys := tokenKeys(t, c.data); len(keys.Keys) != 1 || keys.Keys[0].SignFrom != nil {
			t.Errorf("keys = %+v, want one that signs at once", keys.Keys)
		}
	})
}

// TestKeyRetentionCoversTokens: a replaced key must verify every token it
// may have signed, which lives at most the longest client-token lifetime
// and may be issued by a replica whose clock runs ahead by the allowed
// skew.
func TestKeyRetentionCoversTokens(t *testing.T) {
	if need := config.MaxClientTokenTTL + auth.IssuedAtSkew; fleet.DefaultRotation.Retain < need {
		t.Fatalf("keys are retained %s after their successor signs, less than a token may live (%s)", fleet.DefaultRotation.Retain, need)
	}
	if DefaultKeyActivationDelay < 2*time.Minute+10*time.Second {
		t.Fatalf("activation %s is shorter than the kubelet's default Secret refresh (about 2 min) plus the server's poll", DefaultKeyActivationDelay)
	}
}
