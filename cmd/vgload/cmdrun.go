package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"os"
	"time"
)

// Report is vgload run's JSON output.
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

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("run", stderr)
	var targets listFlag
	fs.Var(&targets, "url", "gateway session URL; repeat it to give the servers a draining session moves to, in turn (default ws://127.0.0.1:8080/v1/realtime)")
	baselineURL := fs.String("baseline-url", "", "a plain echo server (vgload baseline-server) measured first with the same load, for the gateway's added latency")
	apiKey := fs.String("api-key", os.Getenv("VGLOAD_API_KEY"), "API key sent as a bearer token (env VGLOAD_API_KEY); empty for a server run with --insecure-no-auth")
	sessions := fs.Int("sessions", 100, "concurrent sessions")
	ramp := fs.Duration("ramp", 5*time.Second, "spread the connects evenly over this time")
	duration := fs.Duration("duration", 30*time.Second, "steady state after the ramp")
	idle := fs.Bool("idle", false, "connect and hold idle sessions: no audio (for memory per idle session)")
	audio := fs.String("audio", "binary", "audio transport: binary (?audio=binary) or base64 (JSON events)")
	sampleRate := fs.Int("sample-rate", 24000, "PCM16 sample rate, 16000 or 24000; must match the server's --sample-rate")
	commitEvery := fs.Int("commit-every", 50, "frames per input_audio_buffer.commit: 50 is a 1 s turn, streamed back 20 ms at a time; 1 makes every frame a turn (7 server events per frame, the worst case)")
	lateAfter := fs.Duration("late-after", 40*time.Millisecond, "an echo that takes longer than this counts as late")
	settle := fs.Duration("settle", 2*time.Second, "at the end, wait this long for outstanding echoes before hanging up")
	reconnect := fs.Bool("reconnect", true, "on gateway.draining (and on 1001/1012/1013 closes) reconnect, to the next --url, with jittered backoff")
	adminAddr := fs.String("admin", "", "the gateway's admin address (host:port): memory, dropped frames and readiness are read from it")
	adminToken := adminTokenFlag(fs)
	serverPID := fs.Int("server-pid", 0, "the gateway's process id: its CPU and RSS are read from /proc")
	baselinePID := fs.Int("baseline-pid", 0, "the baseline server's process id, for its CPU")
	sigtermAfter := fs.Duration("sigterm-after", 0, "drain test: send SIGTERM to --server-pid this long into the steady state and time the drain")
	drainWait := fs.Duration("drain-wait", 2*time.Minute, "drain test: longest wait for the server to exit")
	cpuProfile := fs.String("cpu-profile", "", "save the gateway's CPU profile over the steady state to this file (go tool pprof)")
	heapProfile := fs.String("heap-profile", "", "save the gateway's heap profile at the end of the steady state to this file")
	jsonOut := fs.String("json", "", "write the JSON report to this file (- for stdout)")
	mdOut := fs.String("markdown", "", "append this run's row of the benchmark table to this file")
	label := fs.String("label", "", "text for the markdown row's first column (default: the session count)")
	allowRemote := fs.Bool("allow-remote", false, "allow non-loopback targets (never needed on one machine)")
	failOnLoss := fs.Bool("fail-on-loss", false, "exit 1 if any frame was lost or a session closed abnormally")
	quiet := fs.Bool("quiet", false, "no human summary on stdout")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(targets) == 0 {
		targets = listFlag{"ws://127.0.0.1:8080/v1/realtime"}
	}
	if *audio != "binary" && *audio != "base64" {
		return fmt.Errorf("--audio must be binary or base64, not %q", *audio)
	}
	if *sampleRate != 16000 && *sampleRate != 24000 {
		return fmt.Errorf("--sample-rate must be 16000 or 24000")
	}
	if *sessions < 1 || *commitEvery < 1 || *duration <= 0 {
		return errors.New("--sessions, --commit-every and --duration must be positive")
	}
	if *sigtermAfter > 0 && *serverPID <= 0 {
		return errors.New("--sigterm-after needs --server-pid")
	}
	binary := *audio == "binary"
	gwTargets := make([]string, len(targets))
	for i, t := range targets {
		if err := checkTarget(t, *allowRemote); err != nil {
			return err
		}
		gwTargets[i] = withAudioParam(t, binary)
	}
	for _, t := range []string{*baselineURL, httpURLOrEmpty(*adminAddr)} {
		if t == "" {
			continue
		}
		if err := checkTarget(t, *allowRemote); err != nil {
			return err
		}
	}

	mode := "relay"
	switch {
	case *idle:
		mode = "idle"
	case *sigtermAfter > 0:
		mode = "drain"
	}
	base := loadConfig{
		sessions: *sessions, ramp: *ramp, duration: *duration, idle: *idle, binary: binary,
		sampleRate: *sampleRate, commitEvery: *commitEvery, lateAfter: *lateAfter, settle: *settle,
		reconnect: *reconnect, dialTimeout: 30 * time.Second,
		backoff: backoff{base: 100 * time.Millisecond, limit: 5 * time.Second, rand: rand.New(rand.NewPCG(rand.Uint64(), 0))},
	}
	report := &Report{
		Machine: describeMachine(), Mode: mode,
		Settings: RunSettings{Sessions: *sessions, RampS: ramp.Seconds(), DurationS: duration.Seconds(),
			Audio: *audio, SampleRate: *sampleRate, CommitEvery: *commitEvery, Idle: *idle},
	}
	dial := newDialer(*apiKey, *allowRemote)

	if *baselineURL != "" {
		cfg := base
		cfg.name, cfg.targets, cfg.expectID, cfg.serverPID = "baseline", []string{*baselineURL}, false, *baselinePID
		res, err := runPhase(ctx, cfg, dial)
		if err != nil {
			return fmt.Errorf("baseline: %w", err)
		}
		report.Baseline = res
	}
	cfg := base
	cfg.name, cfg.targets, cfg.expectID = "gateway", gwTargets, true
	admin, err := newAdminClient(*adminAddr, *adminToken, *allowRemote)
	if err != nil {
		return err
	}
	cfg.admin, cfg.serverPID = admin, *serverPID
	cfg.sigtermAfter, cfg.drainWait = *sigtermAfter, *drainWait
	cfg.cpuProfile, cfg.heapProfile = *cpuProfile, *heapProfile
	res, err := runPhase(ctx, cfg, dial)
	if res != nil {
		report.Gateway = res
	}
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	if b := report.Baseline; b != nil && b.RTT.Count > 0 && res.RTT.Count > 0 {
		report.Added = &Added{
			P50: res.RTT.P50 - b.RTT.P50, P90: res.RTT.P90 - b.RTT.P90,
			P99: res.RTT.P99 - b.RTT.P99, P999: res.RTT.P999 - b.RTT.P999,
		}
	}

	if err := writeJSON(*jsonOut, stdout, report); err != nil {
		return err
	}
	if !*quiet && *jsonOut != "-" {
		writeSummary(stdout, report)
	}
	rowLabel := *label
	if rowLabel == "" {
		rowLabel = thousands(int64(*sessions))
	}
	if err := appendFile(*mdOut, markdownRow(report, rowLabel)); err != nil {
		return err
	}
	if *failOnLoss {
		abnormal := res.Closes["lost 1006"] + res.Closes["aborted"]
		if res.Drain != nil {
			abnormal = res.Drain.Abnormal
		}
		if res.Frames.Lost > 0 || abnormal > 0 {
			return &gateError{fmt.Sprintf("%d frames lost, %d sessions closed abnormally", res.Frames.Lost, abnormal)}
		}
	}
	return nil
}

// withAudioParam adds ?audio=binary to a gateway URL for the binary fast path.
func withAudioParam(raw string, binary bool) string {
	if !binary {
		return raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	q := u.Query()
	if q.Get("audio") == "" {
		q.Set("audio", "binary")
		u.RawQuery = q.Encode()
	}
	return u.String()
}

func httpURLOrEmpty(addr string) string {
	if addr == "" {
		return ""
	}
	return httpURL(addr)
}
