package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/voicegateway/voicegateway/internal/voiceclient"
)

// loadConfig is one phase of load: who to talk to and how.
type loadConfig struct {
	name        string   // "gateway" or "baseline", for reports
	targets     []string // WebSocket URLs; sessions start on the first, reconnects move to the next
	apiKey      string
	http        *http.Client // dials under the loopback guard
	sessions    int
	ramp        time.Duration // connects are spread evenly over it
	duration    time.Duration // steady state after the ramp
	idle        bool          // connect and hold, send nothing
	binary      bool
	sampleRate  int
	commitEvery int           // frames per input_audio_buffer.commit
	lateAfter   time.Duration // an echo slower than this is late
	settle      time.Duration // at the end, how long to wait for outstanding echoes
	reconnect   bool          // follow gateway.draining and retryable closes
	plainEcho   bool          // the target is the plain echo baseline, not the gateway
	backoff     backoff
	dialTimeout time.Duration
	// pacer sends every session's frames from a few shared goroutines
	// (set by startSessions for the phase's life).
	pacer *voiceclient.Pacer

	// Measurements of the server process, all optional.
	admin     *adminClient
	serverPID int
	// Profiles of the server taken through its admin port during the
	// steady state (CPU) and at its end (heap), for pprof.
	cpuProfile, heapProfile string
	// selfProfile is vgload's own CPU profile over the steady state: where
	// the load client spends its time.
	selfProfile string
	// Drain: SIGTERM serverPID this long into the steady state.
	sigtermAfter time.Duration
	drainWait    time.Duration // how long to wait for the server to exit after SIGTERM
}

// PhaseResult is what one phase measured.
type PhaseResult struct {
	Name          string         `json:"name"`
	Targets       []string       `json:"targets"`
	Sessions      int            `json:"sessions"`
	PeakConnected int64          `json:"peak_connected"`
	SessionsReady int64          `json:"sessions_ready"`
	SteadySeconds float64        `json:"steady_seconds"`
	Connect       Summary        `json:"connect"`
	Ready         Summary        `json:"ready"`
	RTT           Summary        `json:"rtt"`
	SendLag       Summary        `json:"send_lag"`
	ReconnectGap  Summary        `json:"reconnect_gap"`
	Frames        FrameCounts    `json:"frames"`
	Closes        map[string]int `json:"closes"`
	Errors        map[string]int `json:"errors"`
	DialFailures  map[string]int `json:"dial_failures"`
	Reconnects    int64          `json:"reconnects"`
	// Resumed counts reconnects that presented the drain notice's resume
	// handle and were told gateway.resumed; ResumeRefused those answered
	// with a resume_* error and a fresh session.
	Resumed       int64   `json:"resumed"`
	ResumeRefused int64   `json:"resume_refused"`
	ClientStalls  int64   `json:"client_stalls"`
	ServerCPU     float64 `json:"server_cpu_cores"` // -1 unknown
	ClientCPU     float64 `json:"client_cpu_cores"`
	// The kernel's part of the two above (system time): the socket work
	// any server does for the same frames, apart from its own code's.
	ServerCPUSystem float64      `json:"server_cpu_system_cores"` // -1 unknown
	ClientCPUSystem float64      `json:"client_cpu_system_cores"`
	ServerDropped   float64      `json:"server_dropped_frames"` // -1 unknown
	Memory          *IdleMemory  `json:"memory,omitempty"`
	Drain           *DrainResult `json:"drain,omitempty"`
	FatalError      string       `json:"fatal_error,omitempty"`
	FramesPerSecPS  float64      `json:"frames_per_second_per_session"`
}

// FrameCounts are exact: every frame carries its sequence number.
type FrameCounts struct {
	Sent       int64 `json:"sent"`
	Received   int64 `json:"received"`
	Lost       int64 `json:"lost"`
	Late       int64 `json:"late"`
	Reordered  int64 `json:"reordered"`
	Duplicate  int64 `json:"duplicate"`
	Unframed   int64 `json:"unframed"`
	LateAfterM int64 `json:"late_after_ms"`
}

// IdleMemory is what idle sessions cost the server.
type IdleMemory struct {
	Sessions             int64    `json:"sessions"`
	RSSBefore            uint64   `json:"rss_before_bytes"`
	RSSAfter             uint64   `json:"rss_after_bytes"`
	Before               MemStats `json:"before"`
	After                MemStats `json:"after"`
	RSSPerSession        float64  `json:"rss_per_session_bytes"`
	HeapStackPerSession  float64  `json:"heap_stack_per_session_bytes"`
	HeapPerSession       float64  `json:"heap_per_session_bytes"`
	StackPerSession      float64  `json:"stack_per_session_bytes"`
	GoroutinesPerSession float64  `json:"goroutines_per_session"`
}

// DrainResult times a drain as the clients and the process table saw it.
// Times are from the SIGTERM.
type DrainResult struct {
	SessionsAtSignal       int64          `json:"sessions_at_signal"`
	ReadinessFailedMS      float64        `json:"readiness_failed_ms"`
	Notified               int64          `json:"notified"`
	FirstNoticeMS          float64        `json:"first_notice_ms"`
	AllNotifiedMS          float64        `json:"all_notified_ms"`
	LastSessionEndedMS     float64        `json:"last_session_ended_ms"`
	ExitMS                 float64        `json:"exit_ms"`
	ExitAfterLastSessionMS float64        `json:"exit_after_last_session_ms"`
	ClosesOnDrained        map[string]int `json:"closes_on_drained_server"`
	Abnormal               int            `json:"closed_abnormally"`
	Exited                 bool           `json:"exited"`
}

// runPhase runs cfg.sessions sessions to the end of the steady state and
// returns what they measured. It returns only when every session has ended.
func runPhase(ctx context.Context, cfg loadConfig) (*PhaseResult, error) {
	if len(cfg.targets) == 0 || cfg.sessions <= 0 {
		return nil, errors.New("nothing to do: no target or no sessions")
	}
	stats := newPhaseStats(len(cfg.targets), cfg.lateAfter)
	res := &PhaseResult{Name: cfg.name, Targets: cfg.targets, Sessions: cfg.sessions, ServerCPU: -1, ServerCPUSystem: -1, ServerDropped: -1}
	before, err := snapshotServer(ctx, cfg)
	if err != nil {
		return nil, err
	}

	sessions := startSessions(ctx, cfg, stats)
	defer sessions.end()
	// Steady state: from the end of the ramp, once the last session had a
	// moment to connect.
	sleepCtx(sessions.ctx, nil, time.Until(sessions.start.Add(cfg.ramp)))
	waitReady(sessions.ctx, stats, int64(cfg.sessions), 10*time.Second)
	stats.measureFrom.Store(int64(voiceclient.Elapsed()))
	if err := steadyState(sessions.ctx, cfg, stats, res); err != nil {
		return nil, err
	}
	if cfg.idle {
		if res.Memory, err = idleMemory(ctx, cfg, before, stats.connected.Load()); err != nil {
			return nil, err
		}
	}
	sessions.end()

	if cfg.admin != nil && res.Drain == nil {
		if d, err := cfg.admin.metricSum(ctx, droppedFrames); err == nil {
			res.ServerDropped = d - before.dropped
		}
	}
	stats.fill(res)
	if res.SteadySeconds > 0 {
		res.FramesPerSecPS = float64(res.Frames.Sent) / float64(cfg.sessions) / (res.SteadySeconds + cfg.ramp.Seconds()/2)
	}
	if p := sessions.fatal.Load(); p != nil {
		res.FatalError = (*p).Error()
		return res, *p
	}
	if res.SessionsReady == 0 {
		// Something listens, but no session ever opened (every upgrade
		// refused, e.g. a wrong key): the figures would measure nothing.
		return res, &gateError{fmt.Sprintf("no session opened at %s (refusals: %v)", strings.Join(cfg.targets, ", "), res.DialFailures)}
	}
	return res, nil
}

const droppedFrames = "voicegateway_dropped_frames_total"

// serverSnapshot is what the server held before the load.
type serverSnapshot struct {
	mem     MemStats
	rss     uint64
	dropped float64
}

func snapshotServer(ctx context.Context, cfg loadConfig) (serverSnapshot, error) {
	var s serverSnapshot
	if cfg.admin != nil {
		var err error
		if s.mem, err = cfg.admin.memStats(ctx); err != nil {
			return s, fmt.Errorf("server admin: %w", err)
		}
		s.dropped, _ = cfg.admin.metricSum(ctx, droppedFrames)
	}
	if cfg.serverPID > 0 {
		s.rss, _ = procRSS(cfg.serverPID)
	}
	return s, nil
}

// idleMemory compares the server's memory with the sessions held against
// before them.
func idleMemory(ctx context.Context, cfg loadConfig, before serverSnapshot, held int64) (*IdleMemory, error) {
	m := &IdleMemory{Sessions: held, RSSBefore: before.rss, Before: before.mem}
	if cfg.serverPID > 0 {
		m.RSSAfter, _ = procRSS(cfg.serverPID)
	}
	if cfg.admin != nil {
		after, err := cfg.admin.memStats(ctx)
		if err != nil {
			return nil, fmt.Errorf("server admin: %w", err)
		}
		m.After = after
	}
	m.compute()
	return m, nil
}

// sessionGroup is a phase's sessions. ctx ends them all at once; end asks
// them to finish politely and waits for every one.
type sessionGroup struct {
	ctx    context.Context
	cancel context.CancelFunc
	stop   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
	settle time.Duration
	start  time.Time
	fatal  atomic.Pointer[error]
	pacer  *voiceclient.Pacer
}

// startSessions starts cfg.sessions sessions spread over the ramp.
func startSessions(ctx context.Context, cfg loadConfig, stats *phaseStats) *sessionGroup {
	g := &sessionGroup{stop: make(chan struct{}), settle: cfg.settle, start: time.Now(), pacer: voiceclient.NewPacer()}
	g.ctx, g.cancel = context.WithCancel(ctx)
	cfg.pacer = g.pacer
	for i := range cfg.sessions {
		at := g.start.Add(time.Duration(int64(cfg.ramp) * int64(i) / int64(cfg.sessions)))
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			if !sleepCtx(g.ctx, g.stop, time.Until(at)) {
				return
			}
			if err := runSession(g.ctx, g.stop, cfg, stats, i); err != nil {
				g.fatal.CompareAndSwap(nil, &err)
			}
		}()
	}
	return g
}

// end runs on every way out, so that no session outlives the phase:
// sessions settle and close politely; one stuck past that is cut.
func (g *sessionGroup) end() {
	g.once.Do(func() {
		close(g.stop)
		joined := make(chan struct{})
		go func() { g.wg.Wait(); close(joined) }()
		select {
		case <-joined:
		case <-time.After(g.settle + 15*time.Second):
			g.cancel()
			<-joined
		}
		g.cancel()
		g.pacer.Close()
	})
}

// steadyState holds the load for cfg.duration while it measures the
// processes' CPU and, as asked, profiles the server or drains it.
func steadyState(ctx context.Context, cfg loadConfig, stats *phaseStats, res *PhaseResult) error {
	start := time.Now()
	serverCPU, clientCPU := startCPU(cfg.serverPID), startCPU(syscall.Getpid())
	// The drain watcher and the profiler are joined before any return.
	ctx, cancel := context.WithCancel(ctx)
	var helpers sync.WaitGroup
	defer helpers.Wait()
	defer cancel()
	drained := make(chan *DrainResult, 1)
	if cfg.sigtermAfter > 0 && cfg.serverPID > 0 {
		helpers.Add(1)
		go func() {
			defer helpers.Done()
			drained <- watchDrain(ctx, cfg, stats, start.Add(cfg.sigtermAfter))
		}()
	} else {
		close(drained)
	}
	profiled := make(chan error, 1)
	if cfg.cpuProfile != "" && cfg.admin != nil {
		seconds := max(1, int((cfg.duration - time.Second).Seconds()))
		helpers.Add(1)
		go func() {
			defer helpers.Done()
			profiled <- cfg.admin.saveProfile(ctx, "/debug/pprof/profile?seconds="+strconv.Itoa(seconds), cfg.cpuProfile)
		}()
	} else {
		profiled <- nil
	}
	stopSelf, err := startSelfProfile(cfg.selfProfile)
	if err != nil {
		return err
	}
	sleepCtx(ctx, nil, time.Until(start.Add(cfg.duration)))
	if err := stopSelf(); err != nil {
		return fmt.Errorf("vgload cpu profile: %w", err)
	}
	if err := <-profiled; err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	if cfg.heapProfile != "" && cfg.admin != nil {
		if err := cfg.admin.saveProfile(ctx, "/debug/pprof/heap?gc=1", cfg.heapProfile); err != nil {
			return fmt.Errorf("heap profile: %w", err)
		}
	}
	if d, ok := <-drained; ok {
		res.Drain = d
		// Long enough for the last notified sessions to land elsewhere.
		sleepCtx(ctx, nil, 3*time.Second)
	}
	res.SteadySeconds = time.Since(start).Seconds()
	res.ServerCPU, res.ServerCPUSystem = serverCPU.cores(), serverCPU.systemCores()
	res.ClientCPU, res.ClientCPUSystem = clientCPU.cores(), clientCPU.systemCores()
	return nil
}

// startSelfProfile starts vgload's own CPU profile into path; the function
// it returns stops it. An empty path profiles nothing.
func startSelfProfile(path string) (func() error, error) {
	if path == "" {
		return func() error { return nil }, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}

// waitReady waits until want sessions are ready, or timeout: a run that
// could not connect everyone still reports what it measured.
func waitReady(ctx context.Context, stats *phaseStats, want int64, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for stats.sessionsReady.Load() < want && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
}

func (m *IdleMemory) compute() {
	n := float64(m.Sessions)
	if n <= 0 {
		return
	}
	per := func(a, b uint64) float64 { return (float64(b) - float64(a)) / n }
	m.RSSPerSession = per(m.RSSBefore, m.RSSAfter)
	m.HeapStackPerSession = per(m.Before.HeapInuseBytes+m.Before.StackInuseBytes, m.After.HeapInuseBytes+m.After.StackInuseBytes)
	m.HeapPerSession = per(m.Before.HeapInuseBytes, m.After.HeapInuseBytes)
	m.StackPerSession = per(m.Before.StackInuseBytes, m.After.StackInuseBytes)
	m.GoroutinesPerSession = float64(m.After.Goroutines-m.Before.Goroutines) / n
}

// watchDrain sends SIGTERM to the server at `at` and times what follows:
// readiness failing, the notices, the sessions leaving, the exit.
func watchDrain(ctx context.Context, cfg loadConfig, stats *phaseStats, at time.Time) *DrainResult {
	res := &DrainResult{ReadinessFailedMS: -1, ExitMS: -1}
	if !sleepCtx(ctx, nil, time.Until(at)) {
		return res
	}
	res.SessionsAtSignal = stats.perTarget[0].live.Load()
	t0 := time.Now()
	if err := syscall.Kill(cfg.serverPID, syscall.SIGTERM); err != nil {
		return res
	}
	since := func(ns int64) float64 {
		if ns == 0 {
			return -1
		}
		return float64(ns-t0.UnixNano()) / float64(time.Millisecond)
	}
	limit := t0.Add(cfg.drainWait)
	for cfg.admin != nil && time.Now().Before(limit) {
		ready, err := cfg.admin.ready(ctx)
		if err != nil || !ready {
			res.ReadinessFailedMS = float64(time.Since(t0)) / float64(time.Millisecond)
			break
		}
		time.Sleep(time.Millisecond)
	}
	for time.Now().Before(limit) && ctx.Err() == nil {
		if procExited(cfg.serverPID) {
			res.Exited = true
			res.ExitMS = float64(time.Since(t0)) / float64(time.Millisecond)
			// Let the clients' goroutines record the last closes.
			time.Sleep(200 * time.Millisecond)
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	res.Notified = stats.notices.Load()
	res.FirstNoticeMS = since(stats.firstNotice.Load())
	res.AllNotifiedMS = since(stats.lastNotice.Load())
	res.LastSessionEndedMS = since(stats.perTarget[0].lastEnd.Load())
	if res.Exited && res.LastSessionEndedMS >= 0 {
		res.ExitAfterLastSessionMS = res.ExitMS - res.LastSessionEndedMS
	}
	res.ClosesOnDrained = stats.perTarget[0].closes.snapshot()
	for kind, n := range res.ClosesOnDrained {
		switch kind {
		case "client 1000", "server 1000", "server 1012", "server 1013":
			// Hung up, closed at the deadline, or refused before it began.
		default:
			res.Abnormal += n
		}
	}
	return res
}
