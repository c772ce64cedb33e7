package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Report is the run's JSON output (report.json).
type Report struct {
	Machine  Machine  `json:"machine"`
	Settings Settings `json:"settings"`
	Rows     []Row    `json:"rows"`
}

// Machine is where and when the run was made.
type Machine struct {
	Date         string `json:"date"`
	Cores        int    `json:"cores"`
	CPU          string `json:"cpu"`
	Go           string `json:"go"`
	Node         string `json:"node"`
	WS           string `json:"ws"` // the ws version the peer's lock file pins
	LoadAvgStart string `json:"load_avg_start"`
	LoadAvgEnd   string `json:"load_avg_end"`
}

// Settings echo the run's flags.
type Settings struct {
	Talking    []int   `json:"talking_sessions"`
	Idle       []int   `json:"idle_sessions"`
	DurationS  float64 `json:"steady_seconds"`
	IdleHoldS  float64 `json:"idle_hold_seconds"`
	ServerCPUs string  `json:"server_cpus"`
	ClientCPUs string  `json:"client_cpus"`
	// Rounds is how many times each load ran against each server; 0 in
	// a report.json from before rounds, which ran each once.
	Rounds int `json:"rounds,omitempty"`
}

func settings(cfg config) Settings {
	return Settings{Talking: cfg.talking, Idle: cfg.idle, DurationS: cfg.duration.Seconds(), IdleHoldS: cfg.idleHold.Seconds(),
		ServerCPUs: cfg.serverCPUs, ClientCPUs: cfg.clientCPUs, Rounds: cfg.rounds}
}

func describeMachine(ctx context.Context, cfg config) Machine {
	m := Machine{
		Date: time.Now().UTC().Format(time.DateOnly), Cores: runtime.NumCPU(), CPU: cpuModel(), Go: runtime.Version(),
		LoadAvgStart: loadAverage(), WS: lockedVersion(filepath.Join(cfg.peerDir, "package-lock.json"), "ws"),
	}
	if out, err := exec.CommandContext(ctx, cfg.node, "--version").Output(); err == nil {
		m.Node = strings.TrimSpace(string(out))
	}
	return m
}

// line is the machine in one sentence, for the report's header.
func (m Machine) line() string {
	return fmt.Sprintf("%s: %d cores, %s, %s, Node.js %s with ws %s; load average %s at the start",
		m.Date, m.Cores, m.CPU, m.Go, m.Node, m.WS, m.LoadAvgStart)
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// loadAverage is the 1, 5 and 15 minute load average.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// lockedVersion is the version of pkg an npm lock file pins.
func lockedVersion(lockFile, pkg string) string {
	data, err := os.ReadFile(lockFile)
	if err != nil {
		return "unknown"
	}
	var lock struct {
		Packages map[string]struct {
			Version string `json:"version"`
		} `json:"packages"`
	}
	if json.Unmarshal(data, &lock) != nil {
		return "unknown"
	}
	if v := lock.Packages["node_modules/"+pkg].Version; v != "" {
		return v
	}
	return "unknown"
}

// installedMarker is the copy of the lock file the last npm ci installed,
// as make compat keeps one: npm ci runs again only when the lock changed,
// so a machine that installed once runs offline.
const installedMarker = ".vgw-installed-lock"

// ensurePeerInstalled runs npm ci in dir unless node_modules already holds
// what its lock file pins.
func ensurePeerInstalled(ctx context.Context, npm, dir string, log io.Writer) error {
	lock, err := os.ReadFile(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		return err
	}
	marker := filepath.Join(dir, "node_modules", installedMarker)
	if installed, err := os.ReadFile(marker); err == nil && bytes.Equal(installed, lock) {
		return nil
	}
	ci := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--prefer-offline")
	ci.Dir, ci.Stdout, ci.Stderr = dir, log, log
	if err := ci.Run(); err != nil {
		return fmt.Errorf("npm ci in %s: %w", dir, err)
	}
	return os.WriteFile(marker, lock, 0o644)
}

// write puts the report into out: report.json, report.md (the machine, the
// table, the chart) and bench-compare.svg; and prints the table.
func (r Report) write(out string, stdout io.Writer) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "report.json"), append(data, '\n'), 0o644); err != nil {
		return err
	}
	svg, err := chartSVG(r.Rows)
	if err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	if err := os.WriteFile(filepath.Join(out, chartFile), svg, 0o644); err != nil {
		return err
	}
	md := r.markdown()
	if err := os.WriteFile(filepath.Join(out, "report.md"), []byte(md), 0o644); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "\n%s\nwritten to %s\n", md, out)
	return err
}

const chartFile = "bench-compare.svg"

func (r Report) markdown() string {
	var b strings.Builder
	s := r.Settings
	fmt.Fprintf(&b, "Machine: %s; %s at the end.\n", r.Machine.line(), r.Machine.LoadAvgEnd)
	fmt.Fprintf(&b, "Server under test on cores `%s`, vgload on cores `%s` (taskset). Talking loads: %.0f s steady state; idle sessions held %.0f s.\n\n",
		orAny(s.ServerCPUs), orAny(s.ClientCPUs), s.DurationS, s.IdleHoldS)
	if n := maxRounds(r.Rows); n > 1 {
		fmt.Fprintf(&b, "Each load ran %d rounds, each a voice server run and a Node run back to back, the voice server first in odd rounds and Node first in even ones. "+
			"Figures are medians over the rounds (frames lost: the sum); the ratio is the median of the rounds' ratios (round i's voice server ÷ round i's Node), their range in brackets; the load average column spans the rounds' starts.\n\n", n)
	}
	b.WriteString(markdownTable(r.Rows))
	if l := legend(r.Rows); l != "" {
		b.WriteString("\n" + l)
	}
	fmt.Fprintf(&b, "\n![CPU and memory per session, voice server beside the Node ws peer](%s)\n", chartFile)
	return b.String()
}

// maxRounds is the most rounds any row ran.
func maxRounds(rows []Row) int {
	n := 0
	for _, r := range rows {
		n = max(n, len(r.rounds()))
	}
	return n
}

func orAny(cpus string) string {
	if cpus == "" {
		return "any"
	}
	return cpus
}
