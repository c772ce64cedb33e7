package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

// loadConfig is one phase of load: who to talk to and how.
type loadConfig struct {
	name        string   // "gateway" or "baseline", for reports
	targets     []string // WebSocket URLs; sessions start on the first, reconnects move to the next
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
	expectID    bool          // the target sends session.created (the gateway does, the plain echo does not)
	backoff     backoff
	dialTimeout time.Duration

	// Measurements of the server process, all optional.
	admin     *adminClient
	serverPID int
	// Profiles of the server taken through its admin port during the
	// steady state (CPU) and at its end (heap), for pprof.
	cpuProfile, heapProfile string
	// Drain: SIGTERM serverPID this long into the steady state.
	sigtermAfter time.Duration
	drainWait    time.Duration // how long to wait for the server to exit after SIGTERM
}

// PhaseResult is what one phase measured.
type PhaseResult struct {
	Name           string         `json:"name"`
	Targets        []string       `json:"targets"`
	Sessions       int            `json:"sessions"`
	PeakConnected  int64          `json:"peak_connected"`
	SessionsReady  int64          `json:"sessions_ready"`
	SteadySeconds  float64        `json:"steady_seconds"`
	Connect        Summary        `json:"connect"`
	Ready          Summary        `json:"ready"`
	RTT            Summary        `json:"rtt"`
	SendLag        Summary        `json:"send_lag"`
	ReconnectGap   Summary        `json:"reconnect_gap"`
	Frames         FrameCounts    `json:"frames"`
	Closes         map[string]int `json:"closes"`
	Errors         map[string]int `json:"errors"`
	DialFailures   map[string]int `json:"dial_failures"`
	Reconnects     int64          `json:"reconnects"`
	ClientStalls   int64          `json:"client_stalls"`
	ServerCPU      float64        `json:"server_cpu_cores"` // -1 unknown
	ClientCPU      float64        `json:"client_cpu_cores"`
	ServerDropped  float64        `json:"server_dropped_frames"` // -1 unknown
	Memory         *IdleMemory    `json:"memory,omitempty"`
	Drain          *DrainResult   `json:"drain,omitempty"`
	FatalError     string         `json:"fatal_error,omitempty"`
	FramesPerSecPS float64        `json:"frames_per_second_per_session"`
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
func runPhase(ctx context.Context, cfg loadConfig, dial *dialer) (*PhaseResult, error) {
	if len(cfg.targets) == 0 || cfg.sessions <= 0 {
		return nil, errors.New("nothing to do: no target or no sessions")
	}
	stats := newPhaseStats(len(cfg.targets), cfg.lateAfter)
	res := &PhaseResult{Name: cfg.name, Targets: cfg.targets, Sessions: cfg.sessions, ServerCPU: -1, ServerDropped: -1}

	var memBefore MemStats
	var rssBefore uint64
	var droppedBefore float64
	if cfg.admin != nil {
		var err error
		if memBefore, err = cfg.admin.memStats(ctx); err != nil {
			return nil, fmt.Errorf("server admin: %w", err)
		}
		droppedBefore, _ = cfg.admin.metricSum(ctx, "voicegateway_dropped_frames_total")
	}
	if cfg.serverPID > 0 {
		rssBefore, _ = procRSS(cfg.serverPID)
	}

	// hardCtx ends everything; stop asks sessions to finish politely.
	// endSessions runs on every way out, so no session outlives the phase.
	hardCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := make(chan struct{})
	var fatal atomic.Pointer[error]
	var wg sync.WaitGroup
	var endOnce sync.Once
	endSessions := func() {
		endOnce.Do(func() {
			close(stop)
			// Sessions settle and close politely; one stuck past that is cut.
			joined := make(chan struct{})
			go func() { wg.Wait(); close(joined) }()
			select {
			case <-joined:
			case <-time.After(cfg.settle + 15*time.Second):
				cancel()
				<-joined
			}
		})
	}
	defer endSessions()
	start := time.Now()
	for i := range cfg.sessions {
		at := start.Add(time.Duration(int64(cfg.ramp) * int64(i) / int64(cfg.sessions)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !sleepCtx(hardCtx, stop, time.Until(at)) {
				return
			}
			if err := runSession(hardCtx, stop, cfg, dial, stats, i); err != nil {
				fatal.CompareAndSwap(nil, &err)
			}
		}()
	}

	// Steady state: from the end of the ramp, once the last session had a
	// moment to connect.
	sleepCtx(hardCtx, nil, time.Until(start.Add(cfg.ramp)))
	waitReady(hardCtx, stats, int64(cfg.sessions), 10*time.Second)
	steadyStart := time.Now()
	stats.measureFrom.Store(int64(sinceEpoch()))
	serverCPU, clientCPU := startCPU(cfg.serverPID), startCPU(syscall.Getpid())

	// The drain watcher and the profiler are joined before any return:
	// deferred calls run last in, first out, so this wait follows cancel.
	var helpers sync.WaitGroup
	defer helpers.Wait()
	defer cancel()
	drainDone := make(chan *DrainResult, 1)
	if cfg.sigtermAfter > 0 && cfg.serverPID > 0 {
		helpers.Add(1)
		go func() {
			defer helpers.Done()
			drainDone <- watchDrain(hardCtx, cfg, stats, steadyStart.Add(cfg.sigtermAfter))
		}()
	} else {
		close(drainDone)
	}
	profiled := make(chan error, 1)
	if cfg.cpuProfile != "" && cfg.admin != nil {
		seconds := max(1, int((cfg.duration - time.Second).Seconds()))
		helpers.Add(1)
		go func() {
			defer helpers.Done()
			profiled <- cfg.admin.saveProfile(hardCtx, "/debug/pprof/profile?seconds="+strconv.Itoa(seconds), cfg.cpuProfile)
		}()
	} else {
		profiled <- nil
	}
	sleepCtx(hardCtx, nil, time.Until(steadyStart.Add(cfg.duration)))
	if err := <-profiled; err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if cfg.heapProfile != "" && cfg.admin != nil {
		if err := cfg.admin.saveProfile(hardCtx, "/debug/pprof/heap?gc=1", cfg.heapProfile); err != nil {
			return nil, fmt.Errorf("heap profile: %w", err)
		}
	}
	if d, ok := <-drainDone; ok {
		res.Drain = d
		// Long enough for the last notified sessions to land elsewhere.
		sleepCtx(hardCtx, nil, 3*time.Second)
	}
	res.SteadySeconds = time.Since(steadyStart).Seconds()
	res.ServerCPU, res.ClientCPU = serverCPU.cores(), clientCPU.cores()

	if cfg.idle {
		res.Memory = &IdleMemory{Sessions: stats.connected.Load(), RSSBefore: rssBefore, Before: memBefore}
		if cfg.serverPID > 0 {
			res.Memory.RSSAfter, _ = procRSS(cfg.serverPID)
		}
		if cfg.admin != nil {
			after, err := cfg.admin.memStats(ctx)
			if err != nil {
				return nil, fmt.Errorf("server admin: %w", err)
			}
			res.Memory.After = after
		}
		res.Memory.compute()
	}

	endSessions()

	if cfg.admin != nil && res.Drain == nil {
		if d, err := cfg.admin.metricSum(ctx, "voicegateway_dropped_frames_total"); err == nil {
			res.ServerDropped = d - droppedBefore
		}
	}
	stats.fill(res)
	if res.SteadySeconds > 0 && cfg.sessions > 0 {
		res.FramesPerSecPS = float64(res.Frames.Sent) / float64(cfg.sessions) / (res.SteadySeconds + cfg.ramp.Seconds()/2)
	}
	if p := fatal.Load(); p != nil {
		res.FatalError = (*p).Error()
		return res, *p
	}
	return res, nil
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

func (s *phaseStats) fill(res *PhaseResult) {
	res.PeakConnected = s.peakConnected.Load()
	res.SessionsReady = s.sessionsReady.Load()
	res.Connect = summarize(s.connect.merged())
	res.Ready = summarize(s.ready.merged())
	res.RTT = summarize(s.rtt.merged())
	res.SendLag = summarize(s.sendLag.merged())
	res.ReconnectGap = summarize(s.gap.merged())
	res.Frames = FrameCounts{
		Sent: s.sent.Load(), Received: s.received.Load(), Lost: s.lost.Load(), Late: s.late.Load(),
		Reordered: s.reordered.Load(), Duplicate: s.duplicate.Load(), Unframed: s.unframed.Load(),
		LateAfterM: s.lateAfter.Milliseconds(),
	}
	res.Closes = s.closes.snapshot()
	res.Errors = s.errors.snapshot()
	res.DialFailures = s.dialFailures.snapshot()
	res.Reconnects = s.reconnects.Load()
	res.ClientStalls = s.stalls.Load()
}

// runSession is one caller: it connects, talks until stop, and follows the
// server's drain notices to the next target. It returns an error only for
// a problem that makes the whole run meaningless (a sample-rate mismatch).
func runSession(ctx context.Context, stop <-chan struct{}, cfg loadConfig, dial *dialer, stats *phaseStats, id int) error {
	st := &sessionState{id: id, seqs: newSeqSet()}
	rng := newRand(id)
	defer func() {
		stats.lost.Add(int64(st.nextSeq.Load()) - st.echoed.Load())
	}()
	target, attempt := 0, 0
	for first := true; ; first = false {
		select {
		case <-stop:
			return nil
		case <-ctx.Done():
			return nil
		default:
		}
		if !first {
			stats.reconnects.Add(1)
			if st.gapFrom == 0 {
				// The first echo on the new connection ends the audio gap.
				st.gapFrom = st.lastEcho.Load()
			}
		}
		out := talk(ctx, stop, cfg, dial, stats, st, target)
		if out.err != nil {
			return out.err
		}
		switch {
		case out.done:
			return nil
		case out.moveAfter >= 0 && cfg.reconnect:
			// Told to reconnect elsewhere: after the hinted wait.
			target, attempt = (target+1)%len(cfg.targets), 0
			if !sleepCtx(ctx, stop, jitter(rng, out.moveAfter, 0.1)) {
				return nil
			}
		case out.retry && cfg.reconnect:
			target = (target + 1) % len(cfg.targets)
			if !sleepCtx(ctx, stop, cfg.backoff.wait(attempt)) {
				return nil
			}
			attempt++
		default:
			return nil
		}
	}
}

// talkOutcome is how one connection of a session ended.
type talkOutcome struct {
	done      bool          // the run is over for this session
	moveAfter time.Duration // ≥ 0: told to reconnect after this long
	retry     bool          // refused or closed in a way worth retrying
	err       error         // fatal for the run
}

// talk runs one connection: dial, wait for session.created, send paced
// frames until stop, a drain notice or the server's close.
func talk(ctx context.Context, stop <-chan struct{}, cfg loadConfig, dial *dialer, stats *phaseStats, st *sessionState, target int) talkOutcome {
	ts := &stats.perTarget[target]
	dctx, cancelDial := context.WithTimeout(ctx, cfg.dialTimeout)
	dialStart := time.Now()
	conn, refusal, err := dial.dial(dctx, cfg.targets[target], nil)
	cancelDial()
	if err != nil {
		if ctx.Err() != nil {
			return talkOutcome{done: true}
		}
		stats.dialFailures.add(refusal, 1)
		return talkOutcome{moveAfter: -1, retry: true}
	}
	stats.connect.record(st.id, time.Since(dialStart))
	storeMax(&stats.peakConnected, stats.connected.Add(1))
	ts.live.Add(1)
	ts.sessions.Add(1)

	c := newLiveConn(conn, target, st, stats, cfg.expectID)
	go c.readLoop(ctx)
	closeKind := ""
	defer func() {
		conn.CloseNow()
		<-c.readerDone
		if closeKind == "" {
			closeKind = endKind(c.readErr, c.closing.Load())
		}
		stats.closes.add(closeKind, 1)
		ts.closes.add(closeKind, 1)
		storeMax(&ts.lastEnd, time.Now().UnixNano())
		ts.live.Add(-1)
		stats.connected.Add(-1)
	}()

	select {
	case <-c.ready:
	case <-c.readerDone:
		return talkOutcome{moveAfter: -1, retry: retryable(endKind(c.readErr, false))}
	case <-ctx.Done():
		return talkOutcome{done: true}
	case <-time.After(cfg.dialTimeout):
		closeKind = "no session.created"
		return talkOutcome{moveAfter: -1, retry: true}
	}
	stats.ready.record(st.id, time.Since(dialStart))
	stats.sessionsReady.Add(1)
	if rate := c.serverRate.Load(); cfg.expectID && rate != 0 && int(rate) != cfg.sampleRate {
		return talkOutcome{err: fmt.Errorf("the server speaks %d Hz, vgload was told %d Hz (--sample-rate)", rate, cfg.sampleRate)}
	}

	frame := newFrameTemplate(cfg.sampleRate)
	var msg []byte
	pending := 0 // frames appended since the last commit
	st.turn++    // a turn left open on an earlier connection was never committed
	st.lastTurnFrames = 0
	// Frame k of this connection is due at first + k·20 ms, like audio from
	// a microphone. A sender that woke late sends what is due at once, as a
	// client draining its capture buffer does; one more than a second
	// behind (a stalled client) skips ahead instead.
	first := time.Now().Add(frameDuration) // taken before the ticker: its ticks are never earlier
	due := 0
	var ticks <-chan time.Time
	if !cfg.idle {
		ticker := time.NewTicker(frameDuration)
		defer ticker.Stop()
		ticks = ticker.C
	}
	for {
		select {
		case <-ctx.Done():
			return talkOutcome{done: true}
		case <-stop:
			finish(ctx, c, cfg, st, pending)
			return talkOutcome{done: true}
		case wait := <-c.draining:
			if !cfg.reconnect {
				continue
			}
			// Finish the turn, hang up, come back elsewhere.
			finish(ctx, c, cfg, st, pending)
			st.gapFrom = st.lastEcho.Load()
			return talkOutcome{moveAfter: wait}
		case <-c.readerDone:
			kind := endKind(c.readErr, false)
			return talkOutcome{moveAfter: -1, retry: retryable(kind)}
		case <-ticks:
		}
		now := time.Now()
		behind := int(now.Sub(first)/frameDuration) + 1 - due
		if behind > framesPerSecond {
			stats.stalls.Add(1)
			due += behind - 1
			behind = 1
		}
		for ; behind > 0; behind-- {
			stats.sendLag.record(st.id, max(time.Since(first.Add(time.Duration(due)*frameDuration)), 0))
			due++
			err = sendFrame(ctx, conn, cfg, frame, &msg, st, stats, &pending)
			if err != nil {
				break
			}
		}
		if err != nil {
			// The reader sees why the connection ended.
			select {
			case <-c.readerDone:
			case <-time.After(time.Second):
			}
			kind := endKind(c.readErr, false)
			if kind == "aborted" && ctx.Err() == nil {
				kind = "lost 1006"
			}
			closeKind = kind
			return talkOutcome{moveAfter: -1, retry: retryable(kind)}
		}
	}
}

// sendFrame sends the session's next frame, and a commit when one is due.
func sendFrame(ctx context.Context, conn *websocket.Conn, cfg loadConfig, frame []byte, msg *[]byte, st *sessionState, stats *phaseStats, pending *int) error {
	encodeFrame(frame, frameHeader{seq: st.nextSeq.Load(), sentAt: sinceEpoch(), turn: st.turn, index: uint32(*pending)})
	var err error
	if cfg.binary {
		err = conn.Write(ctx, websocket.MessageBinary, frame)
	} else {
		*msg = appendAudioEvent((*msg)[:0], frame)
		err = conn.Write(ctx, websocket.MessageText, *msg)
	}
	if err != nil {
		return err
	}
	st.nextSeq.Add(1)
	stats.sent.Add(1)
	if *pending++; *pending >= cfg.commitEvery {
		n := *pending
		*pending = 0
		return commit(ctx, conn, st, n)
	}
	return nil
}

// finish ends a connection politely: commit what is pending, wait up to
// cfg.settle for the echoes of frames sent, and close with 1000.
func finish(ctx context.Context, c *liveConn, cfg loadConfig, st *sessionState, pending int) {
	if pending > 0 {
		_ = commit(ctx, c.conn, st, pending)
	}
	deadline := time.Now().Add(cfg.settle)
	for int64(st.nextSeq.Load()) > st.echoed.Load() && time.Now().Before(deadline) {
		select {
		case <-c.readerDone:
			return
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
	c.closing.Store(true)
	_ = c.conn.Close(websocket.StatusNormalClosure, "done")
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
