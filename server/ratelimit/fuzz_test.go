package ratelimit

import (
	"encoding/json"
	"testing"
)

// FuzzImport feeds arbitrary bytes through the path a state file takes:
// JSON decoding, then Import. Nothing may panic and the cap must hold.
func FuzzImport(f *testing.F) {
	seeds := []string{
		`{"version":1,"exported_at":"2025-03-14T09:26:53Z","entries":[{"ip":"198.51.100.1","failures":5,"suspicious_until":"2025-03-14T09:28:00Z","blocked_until":"2025-03-14T09:36:53Z"}]}`,
		`{"version":1,"exported_at":"2025-03-14T09:26:50Z","entries":[{"ip":"2001:db8::1","failures":3},{"ip":"::ffff:192.0.2.1","failures":65536}]}`,
		`{"version":1,"entries":[{"ip":"fe80::1%eth0","blocked_until":"9999-12-31T23:59:59Z"},{"ip":"192.0.2.1","suspicious_until":"0001-01-01T00:00:00Z"}]}`,
		`{"version":1,"entries":[{"ip":"","failures":-7},{"ip":"x","blocked_until":"2025-03-14T09:36:53Z"}]}`,
		`{"version":2,"entries":[]}`,
		`{"version":1,"entries":null}`,
		`{}`,
		`[]`,
		``,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var s State
		if err := json.Unmarshal(data, &s); err != nil {
			return
		}
		cfg := testConfig()
		cfg.MaxTracked = 8
		l, _ := newTestLimiter(t, cfg)
		l.Failure(nthAddr(0))

		n, _ := l.Import(s)
		if n < 0 || n > cfg.MaxTracked {
			t.Fatalf("Import took %d entries with a cap of %d", n, cfg.MaxTracked)
		}
		st := l.Stats()
		if st.Tracked > cfg.MaxTracked {
			t.Fatalf("Tracked = %d over the cap %d", st.Tracked, cfg.MaxTracked)
		}
		// Whatever came in must export and import again cleanly.
		out := l.Export()
		if len(out.Entries) > cfg.MaxTracked {
			t.Fatalf("Export has %d entries over the cap %d", len(out.Entries), cfg.MaxTracked)
		}
		again, _ := newTestLimiter(t, cfg)
		if _, err := again.Import(out); err != nil {
			t.Fatalf("re-importing an export failed: %v", err)
		}
		for _, e := range out.Entries {
			if e.BlockedUntil != nil && e.BlockedUntil.Sub(t0) > cfg.BlockDuration {
				t.Fatalf("imported block for %s ends %v from now, longer than BlockDuration", e.IP, e.BlockedUntil.Sub(t0))
			}
		}
	})
}
