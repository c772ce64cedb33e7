package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"time"
)

// The load subcommands — relay, idle and drain — run sessions against a
// gateway and report one phase each (relay also a baseline phase first).
// They share their flag groups and their report.

// Report is the JSON output of relay, idle and drain.
type Report struct {
	Machine  Machine      `json:"machine"`
	Mode     string       `json:"mode"` // relay, idle or drain
	Settings RunSettings  `json:"settings"`
	Baseline *PhaseResult `json:"baseline,omitempty"`
	Gateway  *PhaseResult `json:"gateway"`
	// Added is the gateway's round trip less the baseline's, per
	// percentile, in milliseconds: what the gateway adds to a call.
	Added *Added `json:"added_latency,omitempty"`
}

// RunSettings echoes the settings a report was made with.
type RunSettings struct {
	Sessions    int     `json:"sessions"`
	RampS       float64 `json:"ramp_seconds"`
	DurationS   float64 `json:"duration_seconds"`
	Audio       string  `json:"audio"`
	SampleRate  int     `json:"sample_rate"`
	CommitEvery int     `json:"commit_every"`
	Idle        bool    `json:"idle"`
}

// Added is a latency difference in milliseconds.
type Added struct {
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	P999 float64 `json:"p99_9_ms"`
}

const (
	defaultSessionURL = "ws://127.0.0.1:8080/v1/realtime"
	sessionKeyUsage   = "API key sent as a bearer token; empty for a server run with --insecure-no-auth"
)

// loadCommand is what the load subcommands share: their flag groups, and
// turning them into a phase's configuration and a report.
type loadCommand struct {
	mode   string
	fs     *flag.FlagSet
	target targetFlags
	load   loadFlags
	talk   talkFlags // not for idle
	server serverFlags
	report rowFlags
}

func newLoadCommand(mode, serverUse string, stderr io.Writer) *loadCommand {
	c := &loadCommand{mode: mode, fs: newFlagSet(mode, stderr)}
	c.target.register(c.fs, defaultSessionURL, "gateway session URL", sessionKeyUsage, true)
	c.load.register(c.fs)
	if mode != "idle" {
		c.talk.register(c.fs)
	}
	c.server.register(c.fs, "", serverUse, true)
	c.report.register(c.fs, mode)
	return c
}

// parse parses and checks the flags; extra are more addresses for the
// loopback check.
func (c *loadCommand) parse(args []string, extra ...string) error {
	if err := c.fs.Parse(args); err != nil {
		return err
	}
	if err := c.load.check(); err != nil {
		return err
	}
	if c.mode != "idle" {
		if err := c.talk.check(); err != nil {
			return err
		}
	}
	_, err := c.target.targets(append(extra, c.server.adminURL())...)
	return err
}

// phase is the gateway phase's configuration.
func (c *loadCommand) phase() (loadConfig, error) {
	targets, err := c.target.targets()
	if err != nil {
		return loadConfig{}, err
	}
	admin, err := c.server.client(c.target.allowRemote)
	if err != nil {
		return loadConfig{}, err
	}
	cfg := loadConfig{
		name: "gateway", targets: targets, apiKey: c.target.apiKey, http: newHTTPClient(c.target.allowRemote, false),
		sessions: c.load.sessions, ramp: c.load.ramp, duration: c.load.duration,
		binary: true, idle: c.mode == "idle", lateAfter: time.Second, settle: time.Second,
		dialTimeout: 30 * time.Second, admin: admin, serverPID: c.server.pid,
		backoff: backoff{base: 100 * time.Millisecond, limit: 5 * time.Second, rand: rand.New(rand.NewPCG(rand.Uint64(), 0))},
	}
	if c.mode != "idle" {
		t := c.talk
		cfg.binary, cfg.sampleRate, cfg.commitEvery = t.audio == "binary", t.sampleRate, t.commitEvery
		cfg.lateAfter, cfg.settle, cfg.reconnect = t.lateAfter, t.settle, t.reconnect
	}
	return cfg, nil
}

// newReport starts the report with the settings.
func (c *loadCommand) newReport() *Report {
	s := RunSettings{Sessions: c.load.sessions, RampS: c.load.ramp.Seconds(), DurationS: c.load.duration.Seconds(), Idle: c.mode == "idle"}
	if c.mode == "idle" {
		s.Audio = "binary"
	} else {
		s.Audio, s.SampleRate, s.CommitEvery = c.talk.audio, c.talk.sampleRate, c.talk.commitEvery
	}
	return &Report{Machine: describeMachine(), Mode: c.mode, Settings: s}
}

// write puts the report where the flags say: JSON, the summary, the row.
func (c *loadCommand) write(stdout io.Writer, r *Report) error {
	if err := writeJSON(c.report.json, stdout, r); err != nil {
		return err
	}
	if !c.report.quiet && c.report.json != "-" {
		writeSummary(stdout, r)
	}
	label := c.report.label
	if label == "" {
		label = thousands(int64(c.load.sessions))
	}
	return appendFile(c.report.markdown, markdownRow(r, label))
}

// failOnLoss is --fail-on-loss's check of a phase.
func failOnLoss(res *PhaseResult) error {
	abnormal := res.Closes["lost 1006"] + res.Closes["aborted"]
	if res.Drain != nil {
		abnormal = res.Drain.Abnormal
	}
	if res.Frames.Lost > 0 || abnormal > 0 {
		return &gateError{fmt.Sprintf("%d frames lost, %d sessions closed abnormally", res.Frames.Lost, abnormal)}
	}
	return nil
}

func failOnLossFlag(fs *flag.FlagSet) *bool {
	return fs.Bool("fail-on-loss", false, "exit 1 if any frame was lost or a session closed abnormally")
}

// cmdRelay: sessions talk through the gateway for the steady state, with
// the same load first against a plain echo for the latency the gateway adds.
func cmdRelay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newLoadCommand("relay", "memory, dropped frames and profiles are read from it", stderr)
	baselineURL := c.fs.String("baseline-url", "", "a plain echo server (vgload baseline-server) measured first with the same load, for the gateway's added latency")
	baselineProtocol := c.fs.String("baseline-protocol", "echo", "what the baseline speaks: echo (a plain WebSocket echo, vgload baseline-server) or realtime (the session protocol with base64 audio, e.g. the OpenAI-protocol upstream the gateway's openai backend relays to, so that the gateway's run relays the very load the baseline took directly)")
	baselinePID := c.fs.Int("baseline-pid", 0, "the baseline server's process id, for its CPU")
	cpuProfile := c.fs.String("cpu-profile", "", "save the gateway's CPU profile over the steady state to this file (go tool pprof)")
	heapProfile := c.fs.String("heap-profile", "", "save the gateway's heap profile at the end of the steady state to this file")
	selfProfile := c.fs.String("self-cpu-profile", "", "save vgload's own CPU profile over the gateway's steady state to this file (go tool pprof)")
	failOnLossSet := failOnLossFlag(c.fs)
	if err := c.parse(args, *baselineURL); err != nil {
		return err
	}
	if *baselineProtocol != "echo" && *baselineProtocol != "realtime" {
		return fmt.Errorf("--baseline-protocol must be echo or realtime, not %q", *baselineProtocol)
	}
	cfg, err := c.phase()
	if err != nil {
		return err
	}
	cfg.cpuProfile, cfg.heapProfile, cfg.selfProfile = *cpuProfile, *heapProfile, *selfProfile
	if err := checkReachable(ctx, c.target.allowRemote, *baselineURL, cfg.targets[0]); err != nil {
		return err
	}
	report := c.newReport()
	if *baselineURL != "" {
		base := cfg
		base.name, base.targets, base.plainEcho, base.serverPID, base.admin = "baseline", []string{*baselineURL}, true, *baselinePID, nil
		if *baselineProtocol == "realtime" {
			// An OpenAI Realtime upstream has no binary fast path: the
			// client sends appends and reads deltas, which the gateway's
			// run turns into binary and back when --audio is binary.
			base.plainEcho, base.binary = false, false
		}
		base.cpuProfile, base.heapProfile, base.selfProfile = "", "", ""
		if report.Baseline, err = runPhase(ctx, base); err != nil {
			return fmt.Errorf("baseline: %w", err)
		}
	}
	if report.Gateway, err = runPhase(ctx, cfg); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	if b, g := report.Baseline, report.Gateway; b != nil && b.RTT.Count > 0 && g.RTT.Count > 0 {
		report.Added = &Added{
			P50: g.RTT.P50 - b.RTT.P50, P90: g.RTT.P90 - b.RTT.P90,
			P99: g.RTT.P99 - b.RTT.P99, P999: g.RTT.P999 - b.RTT.P999,
		}
	}
	if err := c.write(stdout, report); err != nil {
		return err
	}
	if *failOnLossSet {
		return failOnLoss(report.Gateway)
	}
	return nil
}

// cmdIdle: sessions connect and hold, sending nothing; the server's memory
// before and after gives its cost per idle session.
func cmdIdle(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newLoadCommand("idle", "its memory and goroutines are read before and after", stderr)
	heapProfile := c.fs.String("heap-profile", "", "save the gateway's heap profile while the sessions are held to this file")
	if err := c.parse(args); err != nil {
		return err
	}
	cfg, err := c.phase()
	if err != nil {
		return err
	}
	cfg.heapProfile = *heapProfile
	if err := checkReachable(ctx, c.target.allowRemote, cfg.targets[0]); err != nil {
		return err
	}
	report := c.newReport()
	if report.Gateway, err = runPhase(ctx, cfg); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	return c.write(stdout, report)
}

// cmdDrain: sessions talk, the server is sent SIGTERM during the steady
// state, and the drain is timed as the clients and the process table saw it.
func cmdDrain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newLoadCommand("drain", "its readiness is followed through the drain", stderr)
	sigtermAfter := c.fs.Duration("sigterm-after", 10*time.Second, "send SIGTERM to --server-pid this long into the steady state")
	drainWait := c.fs.Duration("drain-wait", 2*time.Minute, "longest wait for the server to exit")
	failOnLossSet := failOnLossFlag(c.fs)
	if err := c.parse(args); err != nil {
		return err
	}
	if c.server.pid <= 0 || *sigtermAfter <= 0 {
		return errors.New("drain needs --server-pid and a positive --sigterm-after")
	}
	cfg, err := c.phase()
	if err != nil {
		return err
	}
	cfg.sigtermAfter, cfg.drainWait = *sigtermAfter, *drainWait
	if err := checkReachable(ctx, c.target.allowRemote, cfg.targets[0]); err != nil {
		return err
	}
	report := c.newReport()
	if report.Gateway, err = runPhase(ctx, cfg); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	if err := c.write(stdout, report); err != nil {
		return err
	}
	if *failOnLossSet {
		return failOnLoss(report.Gateway)
	}
	return nil
}
