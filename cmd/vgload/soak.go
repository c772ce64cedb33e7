package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/voicegateway/voicegateway/internal/voiceclient"
)

// The soak churns sessions — connect, talk, close, with some errors, some
// abrupt hang-ups and some slow readers — and samples the server's live
// memory, goroutines and open files every few seconds after a forced GC.
// It fits a line to each after the warm-up and reports the drift per day.
// Because the number of live sessions moves with the churn, the fit
// includes it as a second variable: what is left is growth over time.
//
// The gate is exact rather than statistical: once the churn stops and the
// server holds no session, its goroutines and open files must be back to
// what they were before the churn began.

// SoakSample is one reading of the server.
type SoakSample struct {
	AtS float64 `json:"at_seconds"`
	MemStats
}

// Slope is one fitted drift.
type Slope struct {
	PerDay       float64 `json:"per_day"`
	StdErrPerDay float64 `json:"std_err_per_day"` // one standard error: read ±2 of it as the noise
	PerSecond    float64 `json:"per_second"`
	Samples      int     `json:"samples"`
}

// SoakReport is vgload soak's JSON output.
type SoakReport struct {
	Machine         Machine        `json:"machine"`
	DurationS       float64        `json:"duration_seconds"`
	WarmupS         float64        `json:"warmup_seconds"`
	Workers         int            `json:"workers"`
	Sessions        map[string]int `json:"sessions_by_kind"`
	Closes          map[string]int `json:"closes"`
	Errors          map[string]int `json:"errors"`
	DialFailures    map[string]int `json:"dial_failures"`
	FramesSent      int64          `json:"frames_sent"`
	FramesEchoed    int64          `json:"frames_echoed"`
	Samples         []SoakSample   `json:"samples"`
	HeapMBPerDay    Slope          `json:"heap_inuse_mb"`
	GoroutinesSlope Slope          `json:"goroutines"`
	OpenFilesSlope  Slope          `json:"open_files"`
	Baseline        MemStats       `json:"before_churn"`
	Final           MemStats       `json:"after_churn"`
	GoroutineGrowth int            `json:"goroutine_growth"`
	OpenFileGrowth  int            `json:"open_file_growth"`
	Passed          bool           `json:"passed"`
}

type soakConfig struct {
	target, apiKey  string
	http, slowHTTP  *http.Client // the second with a small receive buffer, for slow readers
	workers         int
	duration        time.Duration
	sampleEvery     time.Duration
	warmup          time.Duration
	sampleRate      int
	tolerance       int
	xffAuthFailures bool
}

func cmdSoak(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("soak", stderr)
	var target targetFlags
	target.register(fs, defaultSessionURL, "gateway session URL", "API key; with one, some sessions also fail authentication on purpose", false)
	var server serverFlags
	server.register(fs, "127.0.0.1:9090", "sampled through /debug/memstats", false)
	var report reportFlags
	report.register(fs, "soak")
	workers := fs.Int("sessions", 50, "concurrent churning sessions")
	duration := fs.Duration("duration", 3*time.Minute, "how long to churn")
	sampleEvery := fs.Duration("sample-every", 10*time.Second, "sampling interval")
	warmup := fs.Duration("warmup", 0, "samples before this are left out of the fit (default: a sixth of --duration, at least 30s)")
	sampleRate := fs.Int("sample-rate", 24000, "the server's --sample-rate")
	tolerance := fs.Int("tolerance", 2, "goroutines or open files above the pre-churn count still accepted at the end")
	xff := fs.Bool("xff-auth-failures", true, "failed authentications carry X-Forwarded-For addresses from documentation ranges (run the server with --trusted-proxies 127.0.0.1), so that they do not get the load client itself blocked")
	gate := fs.Bool("gate", false, "exit 1 if goroutines or open files grew")
	if err := fs.Parse(args); err != nil {
		return err
	}
	targets, err := target.targets(server.adminURL())
	if err != nil {
		return err
	}
	if *workers < 1 || *duration <= 0 || *sampleEvery <= 0 {
		return fmt.Errorf("--sessions, --duration and --sample-every must be positive")
	}
	if *warmup <= 0 {
		*warmup = max(30*time.Second, *duration/6)
	}
	if err := checkReachable(ctx, target.allowRemote, targets[0]); err != nil {
		return err
	}
	cfg := soakConfig{
		target: targets[0], apiKey: target.apiKey,
		http: newHTTPClient(target.allowRemote, false), slowHTTP: newHTTPClient(target.allowRemote, true),
		workers: *workers, duration: *duration, sampleEvery: *sampleEvery,
		warmup: *warmup, sampleRate: *sampleRate, tolerance: *tolerance, xffAuthFailures: *xff,
	}
	adminClient, err := server.client(target.allowRemote)
	if err != nil {
		return err
	}
	r, err := runSoak(ctx, cfg, adminClient, stdout)
	if err != nil {
		return err
	}
	if err := writeJSON(report.json, stdout, r); err != nil {
		return err
	}
	writeSoakSummary(stdout, r, cfg)
	if err := appendFile(report.markdown, soakRow(r)); err != nil {
		return err
	}
	if *gate && !r.Passed {
		return &gateError{fmt.Sprintf("server grew: %+d goroutines, %+d open files after the churn (tolerance %d)",
			r.GoroutineGrowth, r.OpenFileGrowth, cfg.tolerance)}
	}
	return nil
}

// Session kinds of the churn and their shares (per thousand).
var soakKinds = []struct {
	name  string
	share int
}{
	{"talk", 640},
	{"talk-base64", 100},
	{"invalid-event", 60},
	{"oversized", 40},
	{"hang-up", 50},
	{"slow-reader", 50},
	{"idle", 30},
	{"bad-auth", 30},
}

func pickKind(r *rand.Rand, withAuth bool) string {
	for {
		n := r.IntN(1000)
		for _, k := range soakKinds {
			if n < k.share {
				if k.name == "bad-auth" && !withAuth {
					break
				}
				return k.name
			}
			n -= k.share
		}
	}
}

func runSoak(ctx context.Context, cfg soakConfig, admin *adminClient, progress io.Writer) (*SoakReport, error) {
	report := &SoakReport{Machine: describeMachine(), WarmupS: cfg.warmup.Seconds(), Workers: cfg.workers}
	base, err := admin.waitSessions(ctx, 0)
	if err != nil {
		return nil, fmt.Errorf("server admin: %w", err)
	}
	report.Baseline = base
	fmt.Fprintf(progress, "soak: %d sessions churning for %v; before: %d goroutines, %d open files, heap %.1f MB\n",
		cfg.workers, cfg.duration, base.Goroutines, base.OpenFiles, float64(base.HeapInuseBytes)/1e6)
	fmt.Fprintf(progress, "%8s %10s %10s %8s %10s %10s\n", "time", "heap MB", "stacks MB", "sessions", "goroutines", "open files")

	stats := newPhaseStats(1, time.Second)
	stats.measureFrom.Store(0)
	var kinds counter

	churnCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	for w := range cfg.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := newRand(w)
			// Spread the first connects over a second.
			if !sleepCtx(churnCtx, stop, time.Duration(rng.Int64N(int64(time.Second)))) {
				return
			}
			for id := w; ; id += cfg.workers {
				select {
				case <-stop:
					return
				case <-churnCtx.Done():
					return
				default:
				}
				kind := pickKind(rng, cfg.apiKey != "")
				kinds.add(kind, 1)
				soakSession(churnCtx, stop, cfg, stats, rng, id, kind)
			}
		}()
	}

	ticker := time.NewTicker(cfg.sampleEvery)
	end := time.After(cfg.duration)
sampling:
	for {
		select {
		case <-ctx.Done():
			break sampling
		case <-end:
			break sampling
		case <-ticker.C:
			m, err := admin.memStats(ctx)
			if err != nil {
				fmt.Fprintf(progress, "sample failed: %v\n", err)
				continue
			}
			s := SoakSample{AtS: time.Since(start).Seconds(), MemStats: m}
			report.Samples = append(report.Samples, s)
			fmt.Fprintf(progress, "%7.0fs %10.2f %10.2f %8d %10d %10d\n", s.AtS, float64(m.HeapInuseBytes)/1e6,
				float64(m.StackInuseBytes)/1e6, m.Sessions, m.Goroutines, m.OpenFiles)
		}
	}
	ticker.Stop()
	report.DurationS = time.Since(start).Seconds()
	close(stop)
	joined := make(chan struct{})
	go func() { wg.Wait(); close(joined) }()
	select {
	case <-joined:
	case <-time.After(30 * time.Second):
		cancel()
		<-joined
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}

	// The server lets go of sessions asynchronously; wait for the count to
	// settle before comparing.
	waitCtx, cancelWait := context.WithTimeout(ctx, time.Minute)
	final, err := admin.waitSessions(waitCtx, 0)
	settleBy := time.Now().Add(30 * time.Second)
	for err == nil && time.Now().Before(settleBy) {
		if final.Goroutines <= base.Goroutines+cfg.tolerance && final.OpenFiles <= base.OpenFiles+cfg.tolerance {
			break
		}
		time.Sleep(time.Second)
		final, err = admin.memStats(waitCtx)
	}
	cancelWait()
	if err != nil {
		return nil, fmt.Errorf("after the churn: %w", err)
	}
	report.Final = final
	report.GoroutineGrowth = final.Goroutines - base.Goroutines
	report.OpenFileGrowth = final.OpenFiles - base.OpenFiles
	report.Passed = report.GoroutineGrowth <= cfg.tolerance && report.OpenFileGrowth <= cfg.tolerance

	var fit []SoakSample
	for _, s := range report.Samples {
		if s.AtS >= cfg.warmup.Seconds() {
			fit = append(fit, s)
		}
	}
	report.HeapMBPerDay = driftPerDay(fit, func(m MemStats) float64 { return float64(m.HeapInuseBytes) / 1e6 })
	report.GoroutinesSlope = driftPerDay(fit, func(m MemStats) float64 { return float64(m.Goroutines) })
	report.OpenFilesSlope = driftPerDay(fit, func(m MemStats) float64 { return float64(m.OpenFiles) })
	report.Sessions = kinds.snapshot()
	report.Closes = stats.closes.snapshot()
	report.Errors = stats.errors.snapshot()
	report.DialFailures = stats.dialFailures.snapshot()
	report.FramesSent, report.FramesEchoed = stats.sent.Load(), stats.received.Load()
	return report, nil
}

// driftPerDay fits y = a + b·t + c·sessions over the samples and returns b
// per day, with its standard error. Holding the session count as its own
// variable keeps the churn's ups and downs out of the drift.
func driftPerDay(samples []SoakSample, y func(MemStats) float64) Slope {
	ts := make([]float64, len(samples))
	xs := make([]float64, len(samples))
	ys := make([]float64, len(samples))
	for i, s := range samples {
		ts[i], xs[i], ys[i] = s.AtS, float64(s.Sessions), y(s.MemStats)
	}
	b, se := fitSlope(ts, xs, ys)
	return Slope{PerSecond: b, PerDay: b * 86400, StdErrPerDay: se * 86400, Samples: len(samples)}
}

// fitSlope returns the least-squares coefficient of t in y = a + b·t + c·x
// and its standard error. When x does not vary (or is collinear with t) it
// falls back to the simple regression of y on t. Fewer than four points
// give 0, 0.
func fitSlope(t, x, y []float64) (slope, stdErr float64) {
	n := float64(len(t))
	if len(t) < 4 {
		return 0, 0
	}
	mean := func(v []float64) float64 {
		var s float64
		for _, e := range v {
			s += e
		}
		return s / n
	}
	mt, mx, my := mean(t), mean(x), mean(y)
	var stt, sxx, stx, sty, sxy float64
	for i := range t {
		dt, dx, dy := t[i]-mt, x[i]-mx, y[i]-my
		stt += dt * dt
		sxx += dx * dx
		stx += dt * dx
		sty += dt * dy
		sxy += dx * dy
	}
	if stt == 0 {
		return 0, 0
	}
	det := stt*sxx - stx*stx
	var c, params float64
	if sxx == 0 || math.Abs(det) < 1e-9*stt*sxx {
		slope, params = sty/stt, 2
	} else {
		slope = (sty*sxx - sxy*stx) / det
		c, params = (sxy*stt-sty*stx)/det, 3
	}
	var rss float64
	for i := range t {
		e := (y[i] - my) - slope*(t[i]-mt) - c*(x[i]-mx)
		rss += e * e
	}
	variance := rss / (n - params)
	if params == 2 {
		return slope, math.Sqrt(variance / stt)
	}
	return slope, math.Sqrt(variance * sxx / det)
}

// soakSession runs one session of the given kind to its end.
func soakSession(ctx context.Context, stop <-chan struct{}, cfg soakConfig, stats *phaseStats, rng *rand.Rand, id int, kind string) {
	c := &caller{id: id, seqs: newSeqSet()}
	opts := voiceclient.Options{
		URL: cfg.target, APIKey: cfg.apiKey, Binary: kind != "talk-base64", HTTPClient: cfg.http,
		OnAudio: func(a voiceclient.Audio) { c.onAudio(stats, a) },
		OnEvent: stats.onEvent,
	}
	switch kind {
	case "slow-reader":
		opts.HTTPClient, opts.ReadDelay = cfg.slowHTTP, 500*time.Millisecond
	case "bad-auth":
		opts.APIKey = "vgload-soak-not-a-valid-key-" + fmt.Sprint(id)
		if cfg.xffAuthFailures {
			opts.Header = http.Header{"X-Forwarded-For": {docAddr(rng.Uint64()).String()}}
		}
	}
	dctx, cancelDial := context.WithTimeout(ctx, 10*time.Second)
	defer cancelDial()
	conn, err := voiceclient.Dial(dctx, opts)
	if err != nil {
		stats.dialFailures.add(refusalKey(err), 1)
		sleepCtx(ctx, stop, 100*time.Millisecond)
		return
	}
	defer func() {
		conn.CloseNow()
		stats.closes.add(endKind(conn.End(), ctx.Err() != nil), 1)
	}()
	if conn.WaitReady(dctx) != nil {
		return
	}

	talkFor := 500*time.Millisecond + time.Duration(rng.Int64N(int64(2500*time.Millisecond)))
	if kind == "slow-reader" {
		// Long enough for the backlog to fill the socket buffers and the
		// server's outbound queue: the server should cut it (slow_consumer).
		talkFor = 8 * time.Second
	}
	if kind == "idle" {
		if sleepCtx(ctx, stop, talkFor) {
			_ = conn.Close()
		}
		return
	}
	call := voiceclient.NewCall(voiceclient.CallOptions{
		SampleRate: cfg.sampleRate, CommitEvery: 5,
		OnFrame: func(voiceclient.FrameHeader, time.Duration) { stats.sent.Add(1) },
	})
	call.Start(ctx, conn)
	defer call.Stop()
	// Ten frames in, the misbehaving kinds misbehave.
	misbehave := time.After(10 * voiceclient.FrameDuration)
	end := time.After(talkFor)
talking:
	for {
		select {
		case <-ctx.Done():
			return
		case <-conn.Done():
			return // the server ended it (oversized, slow reader, …)
		case <-stop:
			break talking // the soak is over: hang up politely
		case <-end:
			break talking
		case <-misbehave:
			switch kind {
			case "invalid-event":
				err = conn.Send(ctx, websocket.MessageText, []byte(`{"type":"vgload.not_an_event"}`))
			case "oversized":
				limit := conn.Session().MaxMessageBytes
				if limit <= 0 {
					limit = 256 << 10
				}
				err = conn.Send(ctx, websocket.MessageBinary, make([]byte, limit+2))
			}
			if err != nil {
				return
			}
		}
	}
	if kind == "hang-up" {
		return // CloseNow in the deferred cleanup: no close handshake
	}
	call.Finish(ctx, 500*time.Millisecond)
}

// docAddr maps n to an address in the documentation and benchmarking
// ranges (198.18.0.0/15, 2001:db8::/32): X-Forwarded-For values that are
// nobody's real address.
func docAddr(n uint64) netip.Addr {
	if n%2 == 0 {
		v := uint32(n/2) % (1 << 17)
		return netip.AddrFrom4([4]byte{198, 18 + byte(v>>16), byte(v >> 8), byte(v)})
	}
	// Each IPv6 address in a /64 of its own: the gateway counts an IPv6
	// client by its /64, so addresses of one /64 would be one client.
	var b [16]byte
	b[0], b[1], b[2], b[3] = 0x20, 0x01, 0x0d, 0xb8
	m := uint32(n / 2)
	b[4], b[5], b[6], b[7] = byte(m>>24), byte(m>>16), byte(m>>8), byte(m)
	b[15] = 1
	return netip.AddrFrom16(b)
}

func writeSoakSummary(w io.Writer, r *SoakReport, cfg soakConfig) {
	fmt.Fprintf(w, "\nsoak: %.0f s, %d concurrent sessions — %d cores (%s), %s, load %s\n",
		r.DurationS, r.Workers, r.Machine.Cores, r.Machine.CPU, r.Machine.Date, r.Machine.LoadAvg)
	fmt.Fprintf(w, "  sessions      %s\n", countMap(r.Sessions))
	fmt.Fprintf(w, "  closes        %s\n", countMap(r.Closes))
	fmt.Fprintf(w, "  error events  %s\n", countMap(r.Errors))
	if len(r.DialFailures) > 0 {
		fmt.Fprintf(w, "  dial refused  %s\n", countMap(r.DialFailures))
	}
	fmt.Fprintf(w, "  frames        %d sent, %d echoed\n", r.FramesSent, r.FramesEchoed)
	fmt.Fprintf(w, "  drift after %.0f s warm-up (%d samples, live sessions held as a variable):\n", r.WarmupS, r.HeapMBPerDay.Samples)
	fmt.Fprintf(w, "    heap in use  %+.2f ± %.2f MB/day\n", r.HeapMBPerDay.PerDay, r.HeapMBPerDay.StdErrPerDay)
	fmt.Fprintf(w, "    goroutines   %+.1f ± %.1f /day\n", r.GoroutinesSlope.PerDay, r.GoroutinesSlope.StdErrPerDay)
	fmt.Fprintf(w, "    open files   %+.1f ± %.1f /day\n", r.OpenFilesSlope.PerDay, r.OpenFilesSlope.StdErrPerDay)
	fmt.Fprintln(w, "    (± one standard error; a drift within two of them is noise, and a short soak has wide ones)")
	fmt.Fprintf(w, "  before → after the churn (no session): goroutines %d → %d, open files %d → %d, heap %.2f → %.2f MB\n",
		r.Baseline.Goroutines, r.Final.Goroutines, r.Baseline.OpenFiles, r.Final.OpenFiles,
		float64(r.Baseline.HeapInuseBytes)/1e6, float64(r.Final.HeapInuseBytes)/1e6)
	verdict := "PASS"
	if !r.Passed {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "  %s: goroutines %+d, open files %+d (tolerance %d)\n", verdict, r.GoroutineGrowth, r.OpenFileGrowth, cfg.tolerance)
}

func soakRow(r *SoakReport) string {
	total := 0
	for _, n := range r.Sessions {
		total += n
	}
	verdict := "pass"
	if !r.Passed {
		verdict = "**fail**"
	}
	return fmt.Sprintf("| %s | %d | %s | %+.2f ± %.2f MB/day | %+.1f ± %.1f /day | %+.1f ± %.1f /day | %d → %d | %d → %d | %s |\n",
		(time.Duration(math.Round(r.DurationS)) * time.Second).String(), r.Workers, thousands(int64(total)),
		r.HeapMBPerDay.PerDay, r.HeapMBPerDay.StdErrPerDay, r.GoroutinesSlope.PerDay, r.GoroutinesSlope.StdErrPerDay,
		r.OpenFilesSlope.PerDay, r.OpenFilesSlope.StdErrPerDay,
		r.Baseline.Goroutines, r.Final.Goroutines, r.Baseline.OpenFiles, r.Final.OpenFiles, verdict)
}
