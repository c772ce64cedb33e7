package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// rowsOfIssue21 are the figures of issue 21's table, plus one failed run.
func rowsOfIssue21() []Row {
	const mib = 1 << 20
	return []Row{
		{Kind: talking, Sessions: 50,
			VoiceServer: Side{CPUCores: 0.12, CPUSystemCores: 0.054, PeakRSSBytes: 28 * mib, P99LatenessMS: 3.3, FramesSent: 50000, SessionsReady: 50},
			Node:        Side{CPUCores: 0.09, CPUSystemCores: 0.05, PeakRSSBytes: 135 * mib, P99LatenessMS: 22.6, FramesSent: 50000, SessionsReady: 50},
			LoadAvg:     "0.42"},
		{Kind: talking, Sessions: 300,
			VoiceServer: Side{CPUCores: 0.47, CPUSystemCores: -1, PeakRSSBytes: 95 * mib, P99LatenessMS: 3.1, FramesSent: 300000, FramesLost: 2, SessionsReady: 300, SendLagP99MS: 31},
			Node:        Side{Error: "vgload relay: exit status 1"},
			LoadAvg:     "1.87"},
		{Kind: idle, Sessions: 2000,
			VoiceServer: Side{CPUCores: 0, PeakRSSBytes: 70 * mib, IdleBytesPerSession: 26 * 1024, SessionsReady: 2000},
			Node:        Side{CPUCores: 0, PeakRSSBytes: 60 * mib, IdleBytesPerSession: 3 * 1024, SessionsReady: 2000},
			LoadAvg:     "0.93"},
	}
}

func TestMarkdownTable(t *testing.T) {
	want := `| load | voice server CPU | Node peer CPU | voice server ÷ Node | kernel CPU voice server / Node | voice server peak RSS | Node peak RSS | p99 echo lateness voice server / Node | frames lost voice server / Node | load average |
|---|---|---|---|---|---|---|---|---|---|
| 50 talking sessions | 0.12 cores | 0.09 cores | 1.33× | 0.05 / 0.05 cores | 28 MiB | 135 MiB | 3.3 / 22.6 ms | 0 / 0 | 0.42 |
| 300 talking sessions | 0.47 cores | — | — | — / — cores | 95 MiB | — | 3.1 ⚠ / — ms | 2 / — | 1.87 |
| 2000 idle sessions | 26.0 KiB each | 3.0 KiB each | 8.67× | | 70 MiB | 60 MiB | | | 0.93 |
`
	if got := markdownTable(rowsOfIssue21()); got != want {
		t.Errorf("table:\n%s\nwant:\n%s", got, want)
	}
	if l := legend(rowsOfIssue21()); !strings.HasPrefix(l, "⚠") {
		t.Errorf("a starved client's row is marked, but the legend is %q", l)
	}
	if l := legend(rowsOfIssue21()[:1]); l != "" {
		t.Errorf("no row is marked, but the legend is %q", l)
	}
}

func TestRatioOfOneRound(t *testing.T) {
	for _, c := range []struct {
		a, b       float64
		errA, errB string
		want       string
	}{
		{0.48, 0.40, "", "", "1.20×"},
		{0.31, 0.24, "", "", "1.29×"},
		{0, 0.5, "", "", "0.00×"},
		{0.5, 0, "", "", "—"},  // nothing to divide by
		{-1, 0.5, "", "", "—"}, // CPU unknown
		{0.5, 0.5, "", "failed", "—"},
	} {
		row := Row{Kind: talking, Sessions: 1,
			VoiceServer: Side{CPUCores: c.a, Error: c.errA}, Node: Side{CPUCores: c.b, Error: c.errB}}
		if got := row.ratioColumn(); got != c.want {
			t.Errorf("ratio of %v and %v (errors %q, %q) = %q, want %q", c.a, c.b, c.errA, c.errB, got, c.want)
		}
	}
}

func TestChartSVG(t *testing.T) {
	svg, err := chartSVG(rowsOfIssue21())
	if err != nil {
		t.Fatal(err)
	}
	texts := wellFormedTexts(t, svg)
	for _, want := range []string{
		"CPU per talking session", "Peak RSS per talking session", "RSS per idle session",
		"voice server", "Node ws peer", "millicores per session", "KiB per session",
	} {
		if !strings.Contains(texts, want) {
			t.Errorf("chart has no text %q", want)
		}
	}
	// Each side has a line in each panel it has points for: the voice
	// server in all three, Node (which failed at 300) in all three too.
	if got := strings.Count(texts, "Node ws peer"); got != 3 {
		t.Errorf("Node ws peer appears in %d legends, want 3", got)
	}
	again, err := chartSVG(rowsOfIssue21())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(svg, again) {
		t.Error("the same figures drew two different charts")
	}
}

func TestChartSVGWithoutFigures(t *testing.T) {
	rows := []Row{{Kind: talking, Sessions: 50, VoiceServer: Side{Error: "x"}, Node: Side{Error: "y"}}}
	svg, err := chartSVG(rows)
	if err != nil {
		t.Fatal(err)
	}
	if texts := wellFormedTexts(t, svg); strings.Contains(texts, "voice server") {
		t.Error("a side with no figures has a legend entry")
	}
}

// wellFormedTexts parses svg as XML and returns its text, joined by newlines.
func wellFormedTexts(t *testing.T, svg []byte) string {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(svg))
	var texts []string
	sawSVG := false
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("chart is not well-formed XML: %v", err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			sawSVG = sawSVG || tok.Name.Local == "svg"
		case xml.CharData:
			if s := strings.TrimSpace(string(tok)); s != "" {
				texts = append(texts, s)
			}
		}
	}
	if !sawSVG {
		t.Fatal("chart has no <svg> element")
	}
	return strings.Join(texts, "\n")
}

func TestRoundTicks(t *testing.T) {
	for _, c := range []struct {
		lo, hi float64
		want   []string
	}{
		{0, 2.9, []string{"0.0", "0.5", "1.0", "1.5", "2.0", "2.5"}},
		{0, 3400, []string{"0", "1000", "2000", "3000"}},
		{0, 330, []string{"0", "100", "200", "300"}},
		{0, 1.2, []string{"0.0", "0.2", "0.4", "0.6", "0.8", "1.0", "1.2"}},
		{0, 1.4, []string{"0.00", "0.25", "0.50", "0.75", "1.00", "1.25"}},
	} {
		var got []string
		for _, tick := range (roundTicks{}).Ticks(c.lo, c.hi) {
			if tick.Label != "" {
				got = append(got, tick.Label)
			}
		}
		if strings.Join(got, " ") != strings.Join(c.want, " ") {
			t.Errorf("ticks of [%v, %v] = %v, want %v", c.lo, c.hi, got, c.want)
		}
	}
}

// A report.json written before the kernel's part of the CPU was measured
// still replots: its kernel column is unknown, not zero.
func TestReplotReportWithoutKernelCPU(t *testing.T) {
	dir := t.TempDir()
	old := `{"machine": {"date": "2026-12-01", "cores": 2}, "settings": {"talking_sessions": [150]},
 "rows": [{"kind": "talking", "sessions": 150, "load_avg": "0.50",
  "voice_server": {"cpu_cores": 0.31, "peak_rss_bytes": 56623104, "p99_echo_lateness_ms": 2.9, "frames_sent": 150000, "sessions_ready": 150, "vgload_cpu_cores": 0.3},
  "node_peer": {"cpu_cores": 0.24, "peak_rss_bytes": 149946368, "p99_echo_lateness_ms": 22.7, "frames_sent": 150000, "sessions_ready": 150, "vgload_cpu_cores": 0.3}}]}`
	md := replotTo(t, writeReportFile(t, dir, old), filepath.Join(dir, "out"))
	const row = "| 150 talking sessions | 0.31 cores | 0.24 cores | 1.29× | — / — cores | 54 MiB | 143 MiB | 2.9 / 22.7 ms | 0 / 0 | 0.50 |"
	if !strings.Contains(md, row) {
		t.Errorf("report.md has no row\n%s\n%s", row, md)
	}
}

// A side's kernel CPU, 0 included, survives report.json.
func TestSideKernelCPUInJSON(t *testing.T) {
	for _, want := range []Side{
		{CPUCores: 0.31, CPUSystemCores: 0.12, ClientCPUCores: 0.3, ClientCPUSystemCores: 0.1, FramesSent: 7},
		{CPUCores: 0.01, CPUSystemCores: 0, ClientCPUSystemCores: -1},
	} {
		data, err := json.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		var got Side
		if err := json.Unmarshal(data, &got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s read back as %+v, want %+v", data, got, want)
		}
	}
}

func TestReadVgloadKernelCPU(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name, json           string
		server, serverKernel float64
		vgload, vgloadKernel float64
	}{
		{"new", `{"gateway": {"server_cpu_cores": 0.31, "server_cpu_system_cores": 0.12, "client_cpu_cores": 0.3, "client_cpu_system_cores": 0.1}}`, 0.31, 0.12, 0.3, 0.1},
		{"older vgload", `{"gateway": {"server_cpu_cores": 0.31, "client_cpu_cores": 0.3}}`, 0.31, -1, 0.3, -1},
	} {
		path := filepath.Join(dir, c.name+".json")
		if err := os.WriteFile(path, []byte(c.json), 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := readVgload(path)
		if err != nil {
			t.Fatal(err)
		}
		if s.CPUCores != c.server || s.CPUSystemCores != c.serverKernel || s.ClientCPUCores != c.vgload || s.ClientCPUSystemCores != c.vgloadKernel {
			t.Errorf("%s: %+v", c.name, s)
		}
	}
}
