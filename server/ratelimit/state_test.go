package ratelimit

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func timePtr(t time.Time) *time.Time { return &t }

func TestExportImportRoundTrip(t *testing.T) {
	cfg := testConfig()
	from, clk := newTestLimiter(t, cfg)
	blocked4 := netip.MustParseAddr("198.51.100.1")
	blocked6 := netip.MustParseAddr("2001:db8::1")
	suspicious := netip.MustParseAddr("203.0.113.9")
	mapped := netip.MustParseAddr("::ffff:192.0.2.44")
	quiet := netip.MustParseAddr("192.0.2.200") // failures only: not exported

	failN(from, blocked4, cfg.BlockAfter)
	clk.Step(17*time.Second + 123*time.Nanosecond)
	failN(from, blocked6, cfg.BlockAfter+2)
	failN(from, suspicious, cfg.SuspiciousAfter)
	clk.Step(3 * time.Second)
	failN(from, mapped, cfg.SuspiciousAfter+1)
	failN(from, quiet, 1)

	exported := from.Export()
	if got, want := len(exported.Entries), 4; got != want {
		t.Fatalf("exported %d entries, want %d: %+v", got, want, exported.Entries)
	}
	data, err := json.Marshal(exported)
	if err != nil {
		t.Fatal(err)
	}

	// The successor starts later on the same clock, as a new pod would.
	clk.Step(time.Second)
	to, err := New(cfg, clk)
	if err != nil {
		t.Fatal(err)
	}
	var decoded State
	if err := json.Unmarshal(data, &decoded); err != nil {
		t.Fatal(err)
	}
	n, err := to.Import(decoded)
	if err != nil || n != 4 {
		t.Fatalf("Import = %d, %v; want 4, nil", n, err)
	}

	// Both sides now agree on every IP and would export the same thing.
	for _, ip := range []netip.Addr{blocked4, blocked6, suspicious, mapped, quiet} {
		if a, b := from.Check(ip), to.Check(ip); a != b {
			t.Errorf("%v: exporter says %+v, importer says %+v", ip, a, b)
		}
	}
	again, err := json.Marshal(to.Export())
	if err != nil {
		t.Fatal(err)
	}
	want, err := json.Marshal(from.Export())
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != string(want) {
		t.Errorf("round trip changed the state:\n got %s\nwant %s", again, want)
	}

	// Importing the same state again changes nothing.
	if _, err := to.Import(decoded); err != nil {
		t.Fatal(err)
	}
	if again, _ := json.Marshal(to.Export()); string(again) != string(want) {
		t.Errorf("second import changed the state:\n got %s\nwant %s", again, want)
	}
}

func TestExportJSONShape(t *testing.T) {
	l, _ := newTestLimiter(t, testConfig())
	failN(l, netip.MustParseAddr("::ffff:198.51.100.1"), 5)
	data, err := json.Marshal(l.Export())
	if err != nil {
		t.Fatal(err)
	}
	want := `{"version":1,"exported_at":"2025-03-14T09:26:53.589793238Z","entries":[` +
		`{"ip":"198.51.100.1","failures":5,"suspicious_until":"2025-03-14T09:28:02.161221814Z","blocked_until":"2025-03-14T09:36:53.589793238Z"}]}`
	if string(data) != want {
		t.Errorf("Export JSON =\n%s\nwant\n%s", data, want)
	}
}

func TestImport(t *testing.T) {
	now := t0
	tests := []struct {
		name         string
		existing     map[string]int // IP -> failures recorded before the import
		advance      time.Duration  // clock step between those failures and the import
		state        State
		maxTracked   int
		wantImported int
		wantErr      string                   // substring; "" means none
		wantRetry    map[string]time.Duration // IP -> RetryAfter of a Block after the import
		wantVerdict  map[string]Verdict
	}{
		{
			name:        "wrong version is rejected whole",
			state:       State{Version: 2, Entries: []Entry{{IP: "192.0.2.1", BlockedUntil: timePtr(now.Add(time.Minute))}}},
			wantErr:     "state version 2 is not supported; this build reads version 1",
			wantVerdict: map[string]Verdict{"192.0.2.1": Allow},
		},
		{
			name: "expired entries are skipped",
			state: State{Version: 1, ExportedAt: now.Add(-time.Hour), Entries: []Entry{
				{IP: "192.0.2.1", Failures: 9, BlockedUntil: timePtr(now.Add(-time.Second))},
				{IP: "192.0.2.2", Failures: 4, SuspiciousUntil: timePtr(now)},
				{IP: "192.0.2.3", Failures: 3},
				{IP: "192.0.2.4", BlockedUntil: timePtr(now.Add(time.Minute))},
			}},
			wantImported: 1,
			wantVerdict:  map[string]Verdict{"192.0.2.1": Allow, "192.0.2.2": Allow, "192.0.2.3": Allow, "192.0.2.4": Block},
		},
		{
			name: "fresh failures count as made now",
			state: State{Version: 1, ExportedAt: now.Add(-10 * time.Second), Entries: []Entry{
				{IP: "192.0.2.1", Failures: 4},
			}},
			wantImported: 1,
			// One more failure reaches BlockAfter (5).
			wantVerdict: map[string]Verdict{"192.0.2.1": Allow},
		},
		{
			name:     "an existing longer block is kept",
			existing: map[string]int{"192.0.2.1": 5}, // blocked 10m
			state: State{Version: 1, Entries: []Entry{
				{IP: "192.0.2.1", BlockedUntil: timePtr(now.Add(5 * time.Minute))},
			}},
			wantImported: 1,
			wantRetry:    map[string]time.Duration{"192.0.2.1": 10 * time.Minute},
		},
		{
			name:     "a longer imported block wins",
			existing: map[string]int{"192.0.2.1": 5}, // blocked 10m
			advance:  5 * time.Minute,                // 5m left
			state: State{Version: 1, Entries: []Entry{
				{IP: "192.0.2.1", BlockedUntil: timePtr(now.Add(5*time.Minute + 8*time.Minute))},
				{IP: "192.0.2.2", BlockedUntil: timePtr(now.Add(5*time.Minute + 7*time.Minute))},
			}},
			wantImported: 2,
			wantRetry:    map[string]time.Duration{"192.0.2.1": 8 * time.Minute, "192.0.2.2": 7 * time.Minute},
		},
		{
			name: "far-future blocks are clamped to BlockDuration",
			state: State{Version: 1, Entries: []Entry{
				{IP: "192.0.2.1", BlockedUntil: timePtr(time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC))},
				{IP: "2001:db8::1", SuspiciousUntil: timePtr(time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC))},
			}},
			wantImported: 2,
			wantRetry:    map[string]time.Duration{"192.0.2.1": 10 * time.Minute},
			wantVerdict:  map[string]Verdict{"2001:db8::1": Slow},
		},
		{
			name: "bad entries are reported and the rest imported",
			state: State{Version: 1, Entries: []Entry{
				{IP: "not-an-ip", BlockedUntil: timePtr(now.Add(time.Minute))},
				{IP: "192.0.2.1", BlockedUntil: timePtr(now.Add(time.Minute))},
				{IP: "192.0.2.2", Failures: -1, SuspiciousUntil: timePtr(now.Add(time.Minute))},
			}},
			wantImported: 1,
			wantErr:      `skipped 2 of 3 state entries; first: entry 0: ip "not-an-ip" is not an IP address`,
			wantRetry:    map[string]time.Duration{"192.0.2.1": time.Minute},
		},
		{
			name:       "cap is respected and blocks go first",
			maxTracked: 2,
			state: State{Version: 1, Entries: []Entry{
				{IP: "192.0.2.1", SuspiciousUntil: timePtr(now.Add(time.Minute))},
				{IP: "192.0.2.2", SuspiciousUntil: timePtr(now.Add(time.Minute))},
				{IP: "192.0.2.3", BlockedUntil: timePtr(now.Add(time.Minute))},
				{IP: "192.0.2.4", BlockedUntil: timePtr(now.Add(2 * time.Minute))},
			}},
			wantImported: 2,
			wantRetry:    map[string]time.Duration{"192.0.2.3": time.Minute, "192.0.2.4": 2 * time.Minute},
			wantVerdict:  map[string]Verdict{"192.0.2.1": Allow, "192.0.2.2": Allow},
		},
		{
			name:       "imports never evict",
			maxTracked: 1,
			existing:   map[string]int{"192.0.2.9": 1},
			state: State{Version: 1, Entries: []Entry{
				{IP: "192.0.2.1", BlockedUntil: timePtr(now.Add(time.Minute))},
			}},
			wantImported: 0,
			wantVerdict:  map[string]Verdict{"192.0.2.1": Allow},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			if tt.maxTracked != 0 {
				cfg.MaxTracked = tt.maxTracked
			}
			l, clk := newTestLimiter(t, cfg)
			for ip, n := range tt.existing {
				failN(l, netip.MustParseAddr(ip), n)
			}
			clk.Step(tt.advance)
			n, err := l.Import(tt.state)
			if tt.wantErr == "" && err != nil {
				t.Errorf("Import error = %v, want nil", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("Import error = %v, want it to contain %q", err, tt.wantErr)
			}
			if n != tt.wantImported {
				t.Errorf("Import = %d, want %d", n, tt.wantImported)
			}
			if got := l.Stats().Tracked; got > cfg.MaxTracked {
				t.Errorf("Tracked = %d over the cap %d", got, cfg.MaxTracked)
			}
			for ip, retry := range tt.wantRetry {
				if got := l.Check(netip.MustParseAddr(ip)); got != blockFor(retry) {
					t.Errorf("Check(%s) = %+v, want Block for %v", ip, got, retry)
				}
			}
			for ip, v := range tt.wantVerdict {
				if got := l.Check(netip.MustParseAddr(ip)); got.Verdict != v {
					t.Errorf("Check(%s) = %+v, want %v", ip, got, v)
				}
			}
		})
	}
}

// TestImportedFailuresCount checks that imported failure counts carry on:
// the next failure adds to them.
func TestImportedFailuresCount(t *testing.T) {
	l, _ := newTestLimiter(t, testConfig())
	ip := netip.MustParseAddr("192.0.2.1")
	_, err := l.Import(State{Version: 1, ExportedAt: t0, Entries: []Entry{{IP: ip.String(), Failures: 4}}})
	if err != nil {
		t.Fatal(err)
	}
	if d := l.Failure(ip); d.Verdict != Block {
		t.Errorf("failure after importing 4 = %+v, want Block at 5", d)
	}
}
