package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestAbuseEndToEnd runs a few attacks of the abuse suite, small, against
// the real voice-server binary: the suite starts and stops the server
// itself, every limit holds, the honest callers lose nothing, and the
// report says so.
func TestAbuseEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test builds and runs the voice server")
	}
	dir := t.TempDir()
	out := vgload(t, "abuse", "--server", voiceServer.Path(t), "--vgload", vgloadBinary.Path(t),
		"--attacks", "hostile-state,token-replay,api-key-cap,ipv6-/64,big-headers,inbound-burst",
		"--honest", "2", "--duration", "2s", "--settle", "3s", "--stuffers", "10", "--flood-addresses", "2000",
		"--dir", filepath.Join(dir, "run"), "--json", filepath.Join(dir, "abuse.json"), "--markdown", filepath.Join(dir, "abuse.md"))
	var r AbuseReport
	readJSON(t, filepath.Join(dir, "abuse.json"), &r)
	if !r.Passed || r.ExitCode != 0 || len(r.Rows) != 6 || r.Budget != 128<<20 {
		t.Fatalf("report %+v", r)
	}
	for _, row := range r.Rows {
		if !row.Passed() || row.Honest.Sessions != 2 || row.Honest.Sent == 0 || row.PeakRSS == 0 {
			t.Errorf("row %s: %+v", row.Attack, row)
		}
	}
	byName := map[string]*AbuseRow{}
	for _, row := range r.Rows {
		byName[row.Attack] = row
	}
	if got := byName["token-replay"].Got; got["session"] != 1 || got["429 rate_limited"] == 0 {
		t.Errorf("token replay got %v", got)
	}
	if got := byName["api-key-cap"].Got; got["sessions held"] != 20 || got["server 1008 api_key_session_limit"] != 40 {
		t.Errorf("api key cap got %v (cap %d)", got, 20)
	}
	if got := byName["hostile-state"].Got; got["entries imported"] != 1000 {
		t.Errorf("hostile state got %v", got)
	}
	if !strings.Contains(out, "every limit held") {
		t.Errorf("summary: %s", out)
	}
}

// TestAbuseRowGate: a row fails on an honest caller's lost frame, an
// abnormal close or an error, and on any violation of an attacker's limit.
func TestAbuseRowGate(t *testing.T) {
	tests := map[string]struct {
		row  AbuseRow
		pass bool
	}{
		"clean":                      {AbuseRow{Honest: Honest{Sessions: 20, Sent: 100, Echoed: 100}}, true},
		"a frame lost":               {AbuseRow{Honest: Honest{Sessions: 20, Sent: 100, Echoed: 99, Lost: 1}}, false},
		"an abnormal close":          {AbuseRow{Honest: Honest{Abnormal: 1}}, false},
		"an honest error":            {AbuseRow{Honest: Honest{Errors: map[string]int{"buffer_full": 1}}}, false},
		"an attacker past its limit": {AbuseRow{Violations: []string{"21 sessions held"}}, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := tc.row.Passed(); got != tc.pass {
				t.Fatalf("Passed() = %v, want %v", got, tc.pass)
			}
			md := abuseMarkdown(&AbuseReport{GoMemLimit: 256 << 20, Rows: []*AbuseRow{&tc.row}})
			if strings.Contains(md, "**no**") == tc.pass {
				t.Fatalf("markdown row %q does not say whether it held", md)
			}
		})
	}
}
