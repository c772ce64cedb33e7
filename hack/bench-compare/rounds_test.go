package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		xs    []float64
		want  float64
		found bool
	}{
		{nil, 0, false},
		{[]float64{0.4}, 0.4, true},
		{[]float64{0.5, 0.1, 0.3}, 0.3, true},
		{[]float64{0.4, 0.1, 0.3, 0.2}, 0.25, true}, // even: the mean of the middle two
	} {
		in := append([]float64(nil), c.xs...)
		got, found := median(c.xs)
		if got != c.want || found != c.found {
			t.Errorf("median(%v) = %v, %v; want %v, %v", c.xs, got, found, c.want, c.found)
		}
		if fmt.Sprint(in) != fmt.Sprint(c.xs) {
			t.Errorf("median reordered its input: %v, was %v", c.xs, in)
		}
	}
}

func TestMedianSide(t *testing.T) {
	const mib = 1 << 20
	runs := []Side{
		{CPUCores: 0.30, CPUSystemCores: 0.10, PeakRSSBytes: 50 * mib, P99LatenessMS: 3, FramesSent: 100, FramesLost: 1, SessionsReady: 150, ClientCPUCores: 0.2, ClientCPUSystemCores: -1, SendLagP99MS: 1},
		{Error: "vgload relay: exit status 1"},
		{CPUCores: 0.50, CPUSystemCores: -1, PeakRSSBytes: 54 * mib, P99LatenessMS: 9, FramesSent: 100, FramesLost: 2, FramesLate: 4, SessionsReady: 150, ClientCPUCores: 0.3, ClientCPUSystemCores: -1, SendLagP99MS: 2},
		{CPUCores: 0.20, CPUSystemCores: 0.20, PeakRSSBytes: 52 * mib, P99LatenessMS: 4, FramesSent: 100, SessionsReady: 150, ClientCPUCores: 0.4, ClientCPUSystemCores: -1, SendLagP99MS: 3},
	}
	got := medianSide(runs)
	want := Side{
		CPUCores:       0.30, // of 0.30, 0.50, 0.20; the failed run left out
		CPUSystemCores: 0.15, // of 0.10 and 0.20; the unknown left out
		PeakRSSBytes:   52 * mib, P99LatenessMS: 4, SessionsReady: 150,
		FramesSent: 300, FramesLost: 3, FramesLate: 4, // sums
		ClientCPUCores: 0.3, ClientCPUSystemCores: -1, SendLagP99MS: 2,
	}
	if !closeSides(got, want) {
		t.Errorf("medians\n%+v\nwant\n%+v", got, want)
	}

	one := runs[0]
	if got := medianSide([]Side{one}); got != one {
		t.Errorf("one run's medians are %+v, want the run itself %+v", got, one)
	}
	if got := medianSide([]Side{{Error: "first"}, {Error: "second"}}); got.Error != "first" {
		t.Errorf("every run failed, but the medians say %+v", got)
	}
	idleRuns := []Side{{IdleBytesPerSession: 26 * 1024, SessionsReady: 2000}, {IdleBytesPerSession: 20 * 1024, SessionsReady: 2000}, {IdleBytesPerSession: 99 * 1024}}
	if got := medianSide(idleRuns); got.IdleBytesPerSession != 23*1024 {
		t.Errorf("memory per idle session %v, want the median of the runs that held sessions, %v", got.IdleBytesPerSession, 23*1024)
	}
}

// closeSides compares sides with the float figures to a millionth: a
// median of two is their mean.
func closeSides(a, b Side) bool {
	near := func(x, y float64) bool { return x-y < 1e-6 && y-x < 1e-6 }
	fa := []float64{a.CPUCores, a.CPUSystemCores, a.ClientCPUCores, a.ClientCPUSystemCores, a.P50LatenessMS, a.P99LatenessMS, a.SendLagP99MS, a.IdleBytesPerSession}
	fb := []float64{b.CPUCores, b.CPUSystemCores, b.ClientCPUCores, b.ClientCPUSystemCores, b.P50LatenessMS, b.P99LatenessMS, b.SendLagP99MS, b.IdleBytesPerSession}
	for i := range fa {
		if !near(fa[i], fb[i]) {
			return false
		}
	}
	a.CPUCores, a.CPUSystemCores, a.ClientCPUCores, a.ClientCPUSystemCores, a.P50LatenessMS, a.P99LatenessMS, a.SendLagP99MS, a.IdleBytesPerSession = 0, 0, 0, 0, 0, 0, 0, 0
	b.CPUCores, b.CPUSystemCores, b.ClientCPUCores, b.ClientCPUSystemCores, b.P50LatenessMS, b.P99LatenessMS, b.SendLagP99MS, b.IdleBytesPerSession = 0, 0, 0, 0, 0, 0, 0, 0
	return a == b
}

// threeRounds is 150 talking sessions in three rounds whose ratios are
// 0.95, 1.30 and 1.12 — the figures of issue 21's spread — and 2000 idle
// sessions in three rounds, Node's second run failed.
func threeRounds() []Row {
	const mib = 1 << 20
	talk := func(cpu, kernel float64, rss uint64, p99 float64, lost int64) Side {
		return Side{CPUCores: cpu, CPUSystemCores: kernel, PeakRSSBytes: rss * mib, P99LatenessMS: p99, FramesSent: 50000, FramesLost: lost, SessionsReady: 150, ClientCPUSystemCores: -1}
	}
	idleSide := func(kib float64, rss uint64) Side {
		return Side{IdleBytesPerSession: kib * 1024, PeakRSSBytes: rss * mib, SessionsReady: 2000, ClientCPUSystemCores: -1}
	}
	return []Row{
		summarize(talking, 150, []Round{
			{VoiceServer: talk(0.19, 0.08, 54, 2.9, 0), Node: talk(0.20, 0.07, 143, 22.7, 0), LoadAvg: "0.50"},
			{VoiceServer: talk(0.26, 0.09, 56, 3.4, 2), Node: talk(0.20, 0.08, 141, 23.1, 0), NodeFirst: true, LoadAvg: "1.20"},
			{VoiceServer: talk(0.28, 0.10, 55, 3.1, 1), Node: talk(0.25, 0.09, 144, 22.0, 1), LoadAvg: "0.80"},
		}),
		summarize(idle, 2000, []Round{
			{VoiceServer: idleSide(26, 70), Node: idleSide(3, 60), LoadAvg: "0.90"},
			{VoiceServer: idleSide(24, 68), Node: Side{Error: "vgload idle: exit status 1"}, NodeFirst: true, LoadAvg: "0.95"},
			{VoiceServer: idleSide(25, 69), Node: idleSide(5, 62), LoadAvg: "1.00"},
		}),
	}
}

func TestMarkdownTableOfRounds(t *testing.T) {
	rows := threeRounds()
	want := `| load | voice server CPU | Node peer CPU | voice server ÷ Node | kernel CPU voice server / Node | voice server peak RSS | Node peak RSS | p99 echo lateness voice server / Node | frames lost voice server / Node | load average |
|---|---|---|---|---|---|---|---|---|---|
| 150 talking sessions | 0.26 cores | 0.20 cores | 1.12× (0.95–1.30) | 0.09 / 0.08 cores | 55 MiB | 143 MiB | 3.1 / 22.7 ms | 3 / 1 | 0.50–1.20 |
| 2000 idle sessions | 25.0 KiB each | 4.0 KiB each | 6.83× (5.00–8.67) | | 69 MiB | 61 MiB | | | 0.90–1.00 |
`
	if got := markdownTable(rows); got != want {
		t.Errorf("table:\n%s\nwant:\n%s", got, want)
	}
	l := legend(rows)
	if !strings.Contains(l, "2000 idle sessions: the Node peer failed in round 2 of 3 (vgload idle: exit status 1)") {
		t.Errorf("the legend does not name the failed run: %q", l)
	}
	if strings.Contains(l, "voice server failed") {
		t.Errorf("the legend names a failure that did not happen: %q", l)
	}
	md := Report{Settings: Settings{Rounds: 3}, Rows: rows}.markdown()
	if !strings.Contains(md, "Each load ran 3 rounds") {
		t.Errorf("report.md does not say the figures are medians of rounds:\n%s", md)
	}
	if md := (Report{Rows: rowsOfIssue21()}).markdown(); strings.Contains(md, "rounds") {
		t.Errorf("a report of one round speaks of rounds:\n%s", md)
	}
}

// The chart draws the medians: the same chart as rows of one round with
// the medians' figures.
func TestChartSVGOfRoundsDrawsMedians(t *testing.T) {
	rows := threeRounds()
	var medians []Row
	for _, r := range rows {
		medians = append(medians, Row{Kind: r.Kind, Sessions: r.Sessions, VoiceServer: r.VoiceServer, Node: r.Node})
	}
	got, err := chartSVG(rows)
	if err != nil {
		t.Fatal(err)
	}
	want, err := chartSVG(medians)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("the chart of three rounds is not the chart of their medians")
	}
	first := []Row{{Kind: talking, Sessions: 150, VoiceServer: rows[0].Rounds[0].VoiceServer, Node: rows[0].Rounds[0].Node}, medians[1]}
	if other, _ := chartSVG(first); bytes.Equal(got, other) {
		t.Error("the chart of the medians is the chart of the first round: the test proves nothing")
	}
}

// measure runs the rounds alternately, a fresh run each (here a stand-in
// that records the order), and says which round each progress line is.
func TestMeasureAlternatesRounds(t *testing.T) {
	var order []string
	cpu := map[string][]float64{"voice-server": {0.30, 0.20, 0.25}, "node-peer": {0.20, 0.25, 0.25}}
	cfg := config{rounds: 3, runOne: func(_ context.Context, name, kind string, n int, suffix string) (Side, error) {
		order = append(order, name+suffix)
		c := cpu[name][0]
		cpu[name] = cpu[name][1:]
		return Side{CPUCores: c, CPUSystemCores: -1, ClientCPUSystemCores: -1, FramesSent: 10, SessionsReady: int64(n)}, nil
	}}
	var out bytes.Buffer
	row := cfg.measure(context.Background(), &out, talking, 150)
	wantOrder := "voice-server-r1 node-peer-r1 node-peer-r2 voice-server-r2 voice-server-r3 node-peer-r3"
	if got := strings.Join(order, " "); got != wantOrder {
		t.Errorf("runs in the order %s, want %s", got, wantOrder)
	}
	if len(row.Rounds) != 3 || row.Rounds[0].NodeFirst || !row.Rounds[1].NodeFirst || row.Rounds[2].NodeFirst {
		t.Errorf("rounds %+v", row.Rounds)
	}
	if row.VoiceServer.CPUCores != 0.25 || row.Node.CPUCores != 0.25 || row.VoiceServer.FramesSent != 30 {
		t.Errorf("medians %+v / %+v", row.VoiceServer, row.Node)
	}
	progress := out.String()
	for _, want := range []string{
		"== 150 talking sessions, round 1 of 3: voice-server\n",
		"== 150 talking sessions, round 2 of 3: node-peer\n",
		"round 2 of 3: voice server ÷ Node 0.80×\n",
		"== 150 talking sessions, median of 3 rounds: voice server ÷ Node 1.00× (0.80–1.50)\n",
	} {
		if !strings.Contains(progress, want) {
			t.Errorf("progress has no %q:\n%s", want, progress)
		}
	}

	order, out = nil, bytes.Buffer{}
	cpu = map[string][]float64{"voice-server": {0.3}, "node-peer": {0.2}}
	cfg.rounds = 1
	cfg.measure(context.Background(), &out, talking, 50)
	if got := strings.Join(order, " "); got != "voice-server node-peer" {
		t.Errorf("one round runs %s, want voice-server node-peer under the names of before", got)
	}
	if strings.Contains(out.String(), "round") {
		t.Errorf("one round's progress speaks of rounds:\n%s", out.String())
	}
}

// A report.json of one run per side (from before rounds) replots as rows
// of one round, and what the replot writes replots to the same table; a
// report of rounds survives report.json whole.
func TestReplotOldAndRoundsReports(t *testing.T) {
	dir := t.TempDir()
	old := `{"machine": {"date": "2026-12-01", "cores": 2}, "settings": {"talking_sessions": [150], "idle_sessions": [2000]},
 "rows": [{"kind": "talking", "sessions": 150, "load_avg": "0.50",
  "voice_server": {"cpu_cores": 0.31, "cpu_system_cores": 0.1, "peak_rss_bytes": 56623104, "p99_echo_lateness_ms": 2.9, "frames_sent": 150000, "frames_lost": 3, "sessions_ready": 150},
  "node_peer": {"cpu_cores": 0.24, "cpu_system_cores": 0.08, "peak_rss_bytes": 149946368, "p99_echo_lateness_ms": 22.7, "frames_sent": 150000, "sessions_ready": 150}},
  {"kind": "idle", "sessions": 2000, "load_avg": "0.93",
  "voice_server": {"cpu_cores": 0, "peak_rss_bytes": 73400320, "idle_rss_per_session_bytes": 26624, "sessions_ready": 2000},
  "node_peer": {"error": "vgload idle: exit status 1"}}]}`
	out := filepath.Join(dir, "out")
	md := replotTo(t, writeReportFile(t, dir, old), out)
	for _, row := range []string{
		"| 150 talking sessions | 0.31 cores | 0.24 cores | 1.29× | 0.10 / 0.08 cores | 54 MiB | 143 MiB | 2.9 / 22.7 ms | 3 / 0 | 0.50 |",
		"| 2000 idle sessions | 26.0 KiB each | — | — | | 70 MiB | — | | | 0.93 |",
	} {
		if !strings.Contains(md, row) {
			t.Errorf("report.md has no row\n%s\n%s", row, md)
		}
	}
	if strings.Contains(md, "rounds") {
		t.Errorf("an old report's replot speaks of rounds:\n%s", md)
	}
	var rewritten Report
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(out, "report.json"))), &rewritten); err != nil {
		t.Fatal(err)
	}
	if n := len(rewritten.Rows[0].Rounds); n != 1 {
		t.Errorf("the old row replotted as %d rounds, want 1", n)
	}
	if md2 := replotTo(t, filepath.Join(out, "report.json"), filepath.Join(dir, "again")); md2 != md {
		t.Errorf("a replot of the replot differs:\n%s\nwas:\n%s", md2, md)
	}

	rounds := Report{Settings: Settings{Rounds: 3}, Rows: threeRounds()}
	first := filepath.Join(dir, "rounds")
	if err := os.MkdirAll(first, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := rounds.write(first, io.Discard); err != nil {
		t.Fatal(err)
	}
	replotted := replotTo(t, filepath.Join(first, "report.json"), filepath.Join(dir, "rounds-replotted"))
	if a, b := readFile(t, filepath.Join(first, "report.md")), replotted; a != b {
		t.Errorf("replotted report.md differs:\n%s\nwas:\n%s", b, a)
	}
	var back Report
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(first, "report.json"))), &back); err != nil {
		t.Fatal(err)
	}
	if n := len(back.Rows[0].Rounds); n != 3 || back.Rows[0].Rounds[1].VoiceServer.CPUCores != 0.26 || !back.Rows[0].Rounds[1].NodeFirst {
		t.Errorf("report.json did not keep every run: %+v", back.Rows[0].Rounds)
	}
}

// writeReportFile writes a report.json's text into dir and returns its path.
func writeReportFile(t *testing.T, dir, report string) string {
	t.Helper()
	path := filepath.Join(dir, "old.json")
	if err := os.WriteFile(path, []byte(report), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// replotTo replots the report.json at from into out and returns the
// report.md it wrote.
func replotTo(t *testing.T, from, out string) string {
	t.Helper()
	if err := replotReport(from, out, io.Discard); err != nil {
		t.Fatal(err)
	}
	return readFile(t, filepath.Join(out, "report.md"))
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
