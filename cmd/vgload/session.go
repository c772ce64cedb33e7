package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"

	"github.com/voicegateway/voicegateway/internal/voiceclient"
)

// phaseStats is what all sessions of one phase record. Everything is safe
// for concurrent use.
type phaseStats struct {
	rtt, connect, ready, sendLag, gap *latency

	sent, received, late, reordered, duplicate, unframed atomic.Int64
	// lost is counted when a session ends: sent frames whose echo never came.
	lost atomic.Int64

	closes       counter // how connections ended, e.g. "client 1000", "server 1012", "lost 1006"
	errors       counter // error event codes
	dialFailures counter // HTTP status of refused upgrades, or "network"

	connected     atomic.Int64 // connections open now
	peakConnected atomic.Int64
	sessionsReady atomic.Int64 // sessions that got session.created (or upgraded, for the baseline)
	reconnects    atomic.Int64
	resumed       atomic.Int64 // reconnects told gateway.resumed
	resumeRefused atomic.Int64 // reconnects whose handle was refused (a resume_* error)
	stalls        atomic.Int64 // senders that fell over a second behind and skipped ahead
	notices       atomic.Int64
	firstNotice   atomic.Int64 // unix ns
	lastNotice    atomic.Int64

	// Per target, for the drain report.
	perTarget []targetStats

	// measureFrom: frames sent before it (during the ramp) are not in the
	// latency histograms. voiceclient.Elapsed nanoseconds.
	measureFrom atomic.Int64
	lateAfter   time.Duration
}

type targetStats struct {
	closes   counter
	live     atomic.Int64
	lastEnd  atomic.Int64 // unix ns of the last connection to end here
	sessions atomic.Int64 // connections ever opened here
}

func newPhaseStats(targets int, lateAfter time.Duration) *phaseStats {
	s := &phaseStats{
		rtt: newLatency(), connect: newLatency(), ready: newLatency(),
		sendLag: newLatency(), gap: newLatency(),
		perTarget: make([]targetStats, targets),
		lateAfter: lateAfter,
	}
	s.measureFrom.Store(int64(^uint64(0) >> 1))
	return s
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
	res.Resumed = s.resumed.Load()
	res.ResumeRefused = s.resumeRefused.Load()
	res.ClientStalls = s.stalls.Load()
}

// onEvent counts a session's error events and drain notices.
func (s *phaseStats) onEvent(ev voiceclient.Event) {
	switch {
	case ev.Error != nil:
		code := ev.Error.Code
		if code == "" {
			code = "(none)"
		}
		s.errors.add(code, 1)
		if strings.HasPrefix(code, "resume_") {
			s.resumeRefused.Add(1)
		}
	case ev.Resumed != nil:
		s.resumed.Add(1)
	case ev.Draining != nil:
		at := ev.At.UnixNano()
		s.notices.Add(1)
		storeMinNonZero(&s.firstNotice, at)
		storeMax(&s.lastNotice, at)
	}
}

func storeMax(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if v <= old || a.CompareAndSwap(old, v) {
			return
		}
	}
}

func storeMinNonZero(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if (old != 0 && v >= old) || a.CompareAndSwap(old, v) {
			return
		}
	}
}

// caller is one simulated caller's accounting, kept across reconnects:
// its voiceclient.Call numbers the frames on, so loss is counted over the
// whole call.
type caller struct {
	id   int
	seqs seqSet // written by the current connection's reader only
	// echoed counts unique frames come back.
	echoed atomic.Int64
	// lastEcho is when the last echo arrived (unix ns); gapFrom, when set,
	// is the last echo before a move to another server, so that the next
	// connection's first echo measures the audio gap.
	lastEcho atomic.Int64
	gapFrom  int64
	// resume is the last drain notice's resume handle, presented by the
	// next connection so that the conversation goes on there.
	resume string
}

// onAudio accounts for one echoed chunk.
func (c *caller) onAudio(stats *phaseStats, a voiceclient.Audio) {
	if !a.Framed {
		stats.unframed.Add(1)
		return
	}
	fresh, reordered := c.seqs.add(a.Frame.Seq)
	if !fresh {
		stats.duplicate.Add(1)
		return
	}
	if reordered {
		stats.reordered.Add(1)
	}
	c.echoed.Add(1)
	stats.received.Add(1)
	now := a.At.UnixNano()
	if from := c.gapFrom; from != 0 {
		stats.gap.record(c.id, time.Duration(now-from))
		c.gapFrom = 0
	}
	c.lastEcho.Store(now)
	// The round trip runs from the moment the echo could first be played:
	// the frame's own send time for a plain echo, its turn's commit plus its
	// place in the turn for the gateway's echo backend.
	rtt := a.Delay()
	if rtt > stats.lateAfter {
		stats.late.Add(1)
	}
	if int64(a.Frame.SentAt) >= stats.measureFrom.Load() {
		stats.rtt.record(c.id, rtt)
	}
}

// newHTTPClient returns the client sessions dial with: every connection
// under the loopback guard, and with slow, a small receive buffer, as a
// client on a poor link has (the server's writes back up within seconds).
func newHTTPClient(allowRemote, slow bool) *http.Client {
	nd := guardedDialer(allowRemote)
	if slow {
		guard := nd.ControlContext
		nd.ControlContext = func(ctx context.Context, network, address string, rc syscall.RawConn) error {
			if guard != nil {
				if err := guard(ctx, network, address, rc); err != nil {
					return err
				}
			}
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return nd.DialContext(ctx, network, addr)
		},
		DisableKeepAlives: true,
		Proxy:             nil,
	}}
}

// refusalKey names a failed dial for the report: the HTTP status of a
// refused upgrade ("503"), or "network" when no HTTP answer came.
func refusalKey(err error) string {
	var refused *voiceclient.RefusedError
	if errors.As(err, &refused) {
		return strconv.Itoa(refused.Status)
	}
	return "network"
}

// endKind names how a connection ended; aborted says the run cut it.
func endKind(e voiceclient.End, aborted bool) string {
	switch {
	case e.ByClient && (e.Code == websocket.StatusNormalClosure || e.Code == -1):
		// Our own close: the handshake finished (1000) or we cut it.
		return "client 1000"
	case e.Code != -1:
		return "server " + strconv.Itoa(int(e.Code))
	case aborted:
		return "aborted"
	}
	return "lost 1006"
}

// retryable says whether a server close means "try again": a drain
// deadline (1012), a going-away server (1001), a full or draining server (1013).
func retryable(kind string) bool {
	switch kind {
	case "server 1001", "server 1012", "server 1013", "lost 1006":
		return true
	}
	return false
}

// sleepCtx waits d or until ctx or stop ends; it reports whether d passed.
func sleepCtx(ctx context.Context, stop <-chan struct{}, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-stop:
		return false
	}
}

// newRand returns a per-session random source; runs differ, sessions too.
func newRand(id int) *rand.Rand {
	return rand.New(rand.NewPCG(rand.Uint64(), uint64(id)))
}

// runSession is one caller: it connects, talks until stop, and follows the
// server's drain notices to the next target. It returns an error only for
// a problem that makes the whole run meaningless (a sample-rate mismatch).
func runSession(ctx context.Context, stop <-chan struct{}, cfg loadConfig, stats *phaseStats, id int) error {
	c := &caller{id: id, seqs: newSeqSet()}
	call := voiceclient.NewCall(voiceclient.CallOptions{
		SampleRate: cfg.sampleRate, CommitEvery: cfg.commitEvery, Pacer: cfg.pacer,
		OnFrame: func(_ voiceclient.FrameHeader, lag time.Duration) {
			stats.sendLag.record(id, lag)
			stats.sent.Add(1)
		},
		OnStall: func(int) { stats.stalls.Add(1) },
	})
	defer func() { stats.lost.Add(call.Sent() - c.echoed.Load()) }()
	rng := newRand(id)
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
			if c.gapFrom == 0 {
				// The first echo on the new connection ends the audio gap.
				c.gapFrom = c.lastEcho.Load()
			}
		}
		out := talk(ctx, stop, cfg, stats, c, call, target)
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

// talk runs one connection: dial, wait for session.created, talk until
// stop, a drain notice or the server's close.
func talk(ctx context.Context, stop <-chan struct{}, cfg loadConfig, stats *phaseStats, c *caller, call *voiceclient.Call, target int) talkOutcome {
	ts := &stats.perTarget[target]
	opts := voiceclient.Options{
		URL: cfg.targets[target], APIKey: cfg.apiKey, Binary: cfg.binary, PlainEcho: cfg.plainEcho, HTTPClient: cfg.http,
		Resume:  c.resume,
		OnAudio: func(a voiceclient.Audio) { c.onAudio(stats, a) },
		OnEvent: stats.onEvent,
	}
	if !cfg.idle && !cfg.plainEcho {
		opts.SampleRate = cfg.sampleRate
	}
	dctx, cancelDial := context.WithTimeout(ctx, cfg.dialTimeout)
	defer cancelDial()
	dialStart := time.Now()
	// A handle is presented once: a refused dial starts afresh next time.
	c.resume = ""
	conn, err := voiceclient.Dial(dctx, opts)
	if err != nil {
		if ctx.Err() != nil {
			return talkOutcome{done: true}
		}
		stats.dialFailures.add(refusalKey(err), 1)
		return talkOutcome{moveAfter: -1, retry: true}
	}
	stats.connect.record(c.id, time.Since(dialStart))
	storeMax(&stats.peakConnected, stats.connected.Add(1))
	ts.live.Add(1)
	ts.sessions.Add(1)
	closeKind := ""
	defer func() {
		conn.CloseNow()
		if closeKind == "" {
			closeKind = endKind(conn.End(), ctx.Err() != nil)
		}
		stats.closes.add(closeKind, 1)
		ts.closes.add(closeKind, 1)
		storeMax(&ts.lastEnd, time.Now().UnixNano())
		ts.live.Add(-1)
		stats.connected.Add(-1)
	}()

	switch err := conn.WaitReady(dctx); {
	case errors.Is(err, voiceclient.ErrSampleRate):
		return talkOutcome{err: fmt.Errorf("%w (vgload's --sample-rate)", err)}
	case err == nil:
	case ctx.Err() != nil:
		return talkOutcome{done: true}
	case errors.Is(err, context.DeadlineExceeded):
		closeKind = "no session.created"
		return talkOutcome{moveAfter: -1, retry: true}
	default: // closed before session.created
		return talkOutcome{moveAfter: -1, retry: retryable(endKind(conn.End(), false))}
	}
	stats.ready.record(c.id, time.Since(dialStart))
	stats.sessionsReady.Add(1)

	if !cfg.idle {
		call.Start(ctx, conn)
	}
	// finish ends the connection politely: commit what is pending, wait up
	// to cfg.settle for the echoes of frames sent, and close with 1000.
	finish := func() {
		if cfg.idle {
			_ = conn.Close()
			return
		}
		call.Finish(ctx, cfg.settle)
	}
	draining := conn.Draining()
	for {
		select {
		case <-ctx.Done():
			call.Stop()
			return talkOutcome{done: true}
		case <-stop:
			finish()
			return talkOutcome{done: true}
		case <-draining:
			if !cfg.reconnect {
				draining = nil
				continue
			}
			// Finish the turn, hang up, come back elsewhere.
			finish()
			c.gapFrom = c.lastEcho.Load()
			c.resume = conn.Notice().Resume
			return talkOutcome{moveAfter: conn.Notice().ReconnectAfter}
		case <-conn.Done():
			call.Stop()
			return talkOutcome{moveAfter: -1, retry: retryable(endKind(conn.End(), false))}
		}
	}
}
