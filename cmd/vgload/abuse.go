package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/voicegateway/voicegateway/internal/childproc"
	"github.com/voicegateway/voicegateway/internal/voiceclient"
)

// vgload abuse runs a real voice server under a memory limit and, one after
// another and then all together, the attacks a client with one valid
// credential (or none) can make on it, with honest callers talking beside
// each. For each attack it reports the server's peak RSS against its
// limit, what the attacker got, and what the honest callers saw; it fails
// (exit 1) when an honest caller lost a frame or was closed abnormally, or
// an attacker got past its documented limit (docs/operations.md, "What
// keeps a pod standing").

// AbuseReport is vgload abuse's JSON output.
type AbuseReport struct {
	Machine    Machine     `json:"machine"`
	GoMemLimit int64       `json:"gomemlimit_bytes"`
	Budget     int64       `json:"budget_bytes"`
	ServerArgs []string    `json:"server_args"`
	Rows       []*AbuseRow `json:"rows"`
	Passed     bool        `json:"passed"`
	ExitCode   int         `json:"server_exit_code"`
	DurationS  float64     `json:"duration_seconds"`
}

// AbuseRow is one attack (or all of them together) and what it did.
type AbuseRow struct {
	Attack string `json:"attack"`
	// Did says what the attacker did; Got what it got (close codes, HTTP
	// statuses, error codes); Limit the documented limit checked.
	Did, Limit string
	Got        map[string]int `json:"got"`
	Detail     string         `json:"detail,omitempty"`
	Violations []string       `json:"violations,omitempty"`
	// PeakRSS is the server's highest resident set during the row;
	// PeakReserved the memory budget's highest count (/metrics).
	PeakRSS      uint64  `json:"peak_rss_bytes"`
	PeakReserved float64 `json:"peak_reserved_bytes"`
	Honest       Honest  `json:"honest"`
	DurationS    float64 `json:"duration_seconds"`
}

// Honest is what the honest callers of a row saw.
type Honest struct {
	Sessions int            `json:"sessions"`
	Sent     int64          `json:"frames_sent"`
	Echoed   int64          `json:"frames_echoed"`
	Lost     int64          `json:"frames_lost"`
	Late     Summary        `json:"echo_lateness"`
	Abnormal int            `json:"abnormal_closes"`
	Closes   map[string]int `json:"closes"`
	Errors   map[string]int `json:"errors"`
}

// Passed says whether the row held.
func (r *AbuseRow) Passed() bool {
	return len(r.Violations) == 0 && r.Honest.Lost == 0 && r.Honest.Abnormal == 0 && len(r.Honest.Errors) == 0
}

// abuseEnv is the server under attack and what the attacks need of it.
type abuseEnv struct {
	public, admin string // host:port
	wsURL         string
	pid           int
	keys          map[string]string // role → API key
	cfg           abuseConfig
	adm           *adminClient
	http          *http.Client
	// together: the attacks run at once (the last row). The CPU floods
	// then run at a quarter of their concurrency: the load client shares
	// this machine's cores with the server, and the row is about the
	// limits holding together, not about how much CPU two cores have.
	together bool
}

// abuseConfig is what vgload abuse was asked to do.
type abuseConfig struct {
	serverBin      string
	gomemlimit     int64
	honest         int
	duration       time.Duration
	settle         time.Duration
	attacks        []string
	rssMargin      int64
	maxTracked     int
	perKey, perIP  int
	stuffers       int
	floodAddresses int
	keepDir        string
	// vgloadBin runs the honest callers in a process of their own
	// (vgload abuse-honest).
	vgloadBin string
}

// The server's settings for the suite, besides the addresses and files:
// the per-session audio bound is the old 60 s, so that the memory budget,
// not the bound, is what stops the stuffers.
func (c abuseConfig) serverArgs(dir string) []string {
	return []string{
		"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		"--api-keys-file", filepath.Join(dir, "api-keys"), "--fleet-secret-dir", filepath.Join(dir, "fleet"),
		"--debug-endpoints", "--trusted-proxies", "127.0.0.1",
		"--ratelimit-state-file", filepath.Join(dir, "ratelimit.json"),
		"--auth-max-tracked", strconv.Itoa(c.maxTracked),
		"--max-buffered-audio", "60s",
		"--max-sessions-per-key", strconv.Itoa(c.perKey), "--max-sessions-per-ip", strconv.Itoa(c.perIP),
		"--propagation-delay", "0s", "--drain-timeout", "7s", "--notify-window", "1s", "--exit-margin", "3s",
		"--log-level", "info",
	}
}

func cmdAbuse(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("abuse", stderr)
	var cfg abuseConfig
	var report reportFlags
	report.register(fs, "abuse")
	fs.StringVar(&cfg.serverBin, "server", "bin/voice-server", "the voice-server binary to run and attack")
	gomemlimit := fs.String("gomemlimit", "256MiB", "GOMEMLIMIT of the server (its memory budget is half of it)")
	fs.IntVar(&cfg.honest, "honest", 20, "honest callers talking beside each attack (1 s turns, half binary with an API key, half base64 with client tokens)")
	fs.DurationVar(&cfg.duration, "duration", 12*time.Second, "how long each attack runs (the idle, slowloris and all-together rows take what their limits need)")
	fs.DurationVar(&cfg.settle, "settle", 5*time.Second, "how long honest callers wait for their last echoes")
	attacks := fs.String("attacks", "all", "comma-separated attacks to run, or all: "+strings.Join(attackNames(), ", "))
	fs.Int64Var(&cfg.rssMargin, "rss-margin", 32<<20, "the server's peak RSS may pass GOMEMLIMIT by this many bytes (the documented margin)")
	fs.IntVar(&cfg.stuffers, "stuffers", 150, "sessions of the memory-stuffing attack")
	fs.IntVar(&cfg.floodAddresses, "flood-addresses", 40000, "client addresses of the failed-authentication flood (2× --auth-max-tracked)")
	fs.StringVar(&cfg.keepDir, "dir", "", "keep the server's files and log here (default: a temporary directory, removed)")
	fs.StringVar(&cfg.vgloadBin, "vgload", "", "the vgload binary that runs the honest callers in a process of their own (default: this one)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	limit, err := parseSize(*gomemlimit)
	if err != nil {
		return fmt.Errorf("--gomemlimit: %w", err)
	}
	cfg.gomemlimit = limit
	if cfg.vgloadBin == "" {
		if cfg.vgloadBin, err = os.Executable(); err != nil {
			return fmt.Errorf("--vgload: %w", err)
		}
	}
	cfg.maxTracked = cfg.floodAddresses / 2
	cfg.perKey, cfg.perIP = cfg.stuffers+10, 50
	if *attacks == "all" {
		cfg.attacks = append(attackNames(), "all together")
	} else {
		for _, a := range strings.Split(*attacks, ",") {
			if a = strings.TrimSpace(a); a != "" {
				if a != "all together" && findAttack(a) == nil {
					return fmt.Errorf("unknown attack %q; known: %s", a, strings.Join(attackNames(), ", "))
				}
				cfg.attacks = append(cfg.attacks, a)
			}
		}
	}
	started := time.Now()
	r, err := runAbuse(ctx, cfg, stdout)
	if r == nil {
		return err
	}
	r.DurationS = time.Since(started).Seconds()
	if werr := writeJSON(report.json, stdout, r); werr != nil && err == nil {
		err = werr
	}
	writeAbuseTable(stdout, r)
	if werr := appendFile(report.markdown, abuseMarkdown(r)); werr != nil && err == nil {
		err = werr
	}
	if err != nil {
		return err
	}
	if !r.Passed {
		return &gateError{msg: "abuse: an honest caller lost a frame or was cut, or an attacker passed its limit (see the table)"}
	}
	return nil
}

// parseSize reads 256MiB, 512Mi or a number of bytes.
func parseSize(s string) (int64, error) {
	s = strings.TrimSuffix(strings.TrimSpace(s), "B")
	for _, u := range []struct {
		suffix string
		factor int64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}} {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			return v * u.factor, err
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

// runAbuse prepares the server's files, starts it and runs the rows. It
// returns the report (nil when the server could not even start).
func runAbuse(ctx context.Context, cfg abuseConfig, stdout io.Writer) (*AbuseReport, error) {
	dir := cfg.keepDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "vgload-abuse-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// What an earlier run left in --dir is replaced.
	for _, name := range []string{"fleet", "oversized", "api-keys", "ratelimit.json", "server.log"} {
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			return nil, err
		}
	}
	keys := map[string]string{}
	var keyFile strings.Builder
	for _, role := range []string{"honest", "stuffer", "capped", "network", "replay"} {
		keys[role] = fmt.Sprintf("vgload-abuse-%s-key-%d", role, time.Now().UnixNano())
		keyFile.WriteString(keys[role] + "\n")
	}
	if err := os.WriteFile(filepath.Join(dir, "api-keys"), []byte(keyFile.String()), 0o600); err != nil {
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, cfg.serverBin, "fleet-secret", "init", "--dir", filepath.Join(dir, "fleet")).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("fleet-secret init: %v\n%s", err, out)
	}
	stateEntries, stateBytes, err := writeHostileState(filepath.Join(dir, "ratelimit.json"), cfg.maxTracked)
	if err != nil {
		return nil, err
	}
	// A second file far over the state file's bound: a server given it
	// must start, with it unread.
	oversized, err := tryOversizedState(ctx, cfg, dir)
	if err != nil {
		return nil, err
	}

	srv, err := startAbuseServer(ctx, cfg, dir)
	if err != nil {
		return nil, err
	}
	defer srv.kill()
	adm, err := newAdminClient(srv.admin, filepath.Join(dir, "fleet", "admin-token"), false)
	if err != nil {
		return nil, err
	}
	env := &abuseEnv{
		public: srv.public, admin: srv.admin, wsURL: "ws://" + srv.public + "/v1/realtime", pid: srv.pid(),
		keys: keys, cfg: cfg, adm: adm,
		http: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: guardedDialer(false).DialContext, DisableKeepAlives: true, Proxy: nil}},
	}
	budget, _ := adm.metricSum(ctx, "voicegateway_memory_budget_bytes")
	r := &AbuseReport{Machine: describeMachine(), GoMemLimit: cfg.gomemlimit, Budget: int64(budget), ServerArgs: cfg.serverArgs("DIR"), Passed: true}
	fmt.Fprintf(stdout, "abuse: voice server pid %d, GOMEMLIMIT %d MiB, memory budget %d MiB; %d honest callers beside each attack\n",
		env.pid, cfg.gomemlimit>>20, int64(budget)>>20, cfg.honest)

	for _, name := range cfg.attacks {
		if ctx.Err() != nil {
			break
		}
		var row *AbuseRow
		if name == "all together" {
			together := *env
			together.together = true
			row = runRow(ctx, &together, name, allTogether)
		} else {
			a := findAttack(name)
			run := a.run
			if a.name == "hostile-state" {
				run = func(ctx context.Context, env *abuseEnv) attackResult {
					return hostileStateResult(ctx, env, srv.logs(), stateEntries, stateBytes, oversized)
				}
			}
			row = runRow(ctx, env, name, run)
		}
		r.Rows = append(r.Rows, row)
		status := "held"
		if !row.Passed() {
			status = "FAILED"
			r.Passed = false
		}
		fmt.Fprintf(stdout, "  %-24s %-6s peak RSS %5.1f MiB; honest: %d sessions, %d lost, p99 lateness %s ms, %d abnormal; attacker got %s %s\n",
			name, status, float64(row.PeakRSS)/(1<<20), row.Honest.Sessions, row.Honest.Lost, msf(row.Honest.Late.P99), row.Honest.Abnormal,
			countMap(row.Got), strings.Join(row.Violations, "; "))
	}
	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	code, err := srv.stop(30 * time.Second)
	r.ExitCode = code
	if err != nil || code != 0 {
		r.Passed = false
		return r, fmt.Errorf("the voice server did not stop cleanly (exit %d): %v\n%s", code, err, lastLines(srv.logs(), 20))
	}
	return r, nil
}

// attackResult is what one attack reports.
type attackResult struct {
	did, limit string
	got        map[string]int
	detail     string
	violations []string
}

// runRow starts the honest callers, runs the attack beside them while
// sampling the server, lets the callers finish and checks both.
func runRow(ctx context.Context, env *abuseEnv, name string, attack func(context.Context, *abuseEnv) attackResult) *AbuseRow {
	row := &AbuseRow{Attack: name}
	start := time.Now()
	sampler := startSampler(ctx, env)
	honest, err := startHonestProcess(ctx, env)
	if err != nil {
		row.Violations = append(row.Violations, "the honest callers did not start: "+err.Error())
		row.PeakRSS, row.PeakReserved = sampler.stop()
		return row
	}
	res := attack(ctx, env)
	row.Honest, err = honest.finish(env.cfg.settle + time.Minute)
	if err != nil {
		row.Violations = append(row.Violations, "the honest callers: "+err.Error())
	}
	row.PeakRSS, row.PeakReserved = sampler.stop()
	row.Did, row.Limit, row.Got, row.Detail, row.Violations = res.did, res.limit, res.got, res.detail, res.violations
	if limit := uint64(env.cfg.gomemlimit + env.cfg.rssMargin); row.PeakRSS > limit {
		row.Violations = append(row.Violations, fmt.Sprintf("peak RSS %.0f MiB over GOMEMLIMIT + margin (%d MiB)", float64(row.PeakRSS)/(1<<20), limit>>20))
	}
	if budget, _ := env.adm.metricSum(ctx, "voicegateway_memory_budget_bytes"); budget > 0 && row.PeakReserved > budget {
		row.Violations = append(row.Violations, fmt.Sprintf("the budget counted %.0f MiB, over its %.0f MiB", row.PeakReserved/(1<<20), budget/(1<<20)))
	}
	// Nothing of the row stays behind: every attacker's session ended.
	if _, err := env.adm.waitSessions(ctx, 0); err != nil {
		row.Violations = append(row.Violations, "sessions left after the row: "+err.Error())
	}
	row.DurationS = time.Since(start).Seconds()
	return row
}

// sampler watches the server's RSS (/proc) and its memory budget's count
// (/metrics) while a row runs.
type sampler struct {
	stopOnce     sync.Once
	done         chan struct{}
	finished     chan struct{}
	peakRSS      atomic.Uint64
	peakReserved atomic.Int64 // bytes
}

func startSampler(ctx context.Context, env *abuseEnv) *sampler {
	s := &sampler{done: make(chan struct{}), finished: make(chan struct{})}
	go func() {
		defer close(s.finished)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			if rss, err := procRSS(env.pid); err == nil && rss > s.peakRSS.Load() {
				s.peakRSS.Store(rss)
			}
			if i%5 == 0 {
				if v, err := env.adm.metricSum(ctx, "voicegateway_memory_reserved_bytes"); err == nil && int64(v) > s.peakReserved.Load() {
					s.peakReserved.Store(int64(v))
				}
			}
			select {
			case <-s.done:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

func (s *sampler) stop() (uint64, float64) {
	s.stopOnce.Do(func() { close(s.done) })
	<-s.finished
	return s.peakRSS.Load(), float64(s.peakReserved.Load())
}

// honestCallers are a row's honest callers: each its own client address,
// half binary audio with the honest API key, half base64 with a client
// token minted for it, 1 s turns, talking from before the attack until
// after it.
type honestCallers struct {
	stop    chan struct{}
	wg      sync.WaitGroup
	stats   *phaseStats
	started atomic.Int64
	lost    atomic.Int64
	echoed  atomic.Int64
	sent    atomic.Int64
	ab      atomic.Int64
}

func startHonest(ctx context.Context, env *abuseEnv) *honestCallers {
	h := &honestCallers{stop: make(chan struct{}), stats: newPhaseStats(1, 0)}
	h.stats.lateAfter = time.Hour // lateness is reported, not counted as late
	h.stats.measureFrom.Store(0)
	ready := make(chan struct{}, env.cfg.honest)
	for i := range env.cfg.honest {
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			h.talk(ctx, env, i, ready)
		}()
	}
	// The attack begins once every honest caller talks (or failed to).
	for range env.cfg.honest {
		select {
		case <-ready:
		case <-time.After(30 * time.Second):
		}
	}
	return h
}

func (h *honestCallers) talk(ctx context.Context, env *abuseEnv, i int, ready chan<- struct{}) {
	signalled := false
	defer func() {
		if !signalled {
			ready <- struct{}{}
		}
	}()
	c := &caller{id: i, seqs: newSeqSet()}
	opts := voiceclient.Options{
		URL: env.wsURL, SampleRate: 24000,
		Header:     http.Header{"X-Forwarded-For": {fmt.Sprintf("198.51.100.%d", 10+i)}},
		HTTPClient: env.http,
		OnAudio:    func(a voiceclient.Audio) { c.onAudio(h.stats, a) },
		OnEvent:    h.stats.onEvent,
	}
	if i%2 == 0 {
		opts.APIKey, opts.Binary = env.keys["honest"], true
	} else {
		mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		token, err := voiceclient.MintToken(mctx, voiceclient.MintOptions{URL: "http://" + env.public + "/v1/client_tokens", APIKey: env.keys["honest"], HTTPClient: env.http})
		cancel()
		if err != nil {
			h.stats.dialFailures.add("mint: "+refusalKey(err), 1)
			h.ab.Add(1)
			return
		}
		opts.Token = token
	}
	dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	conn, err := voiceclient.Open(dctx, opts)
	cancel()
	if err != nil {
		h.stats.dialFailures.add(refusalKey(err), 1)
		h.ab.Add(1)
		return
	}
	h.started.Add(1)
	call := voiceclient.NewCall(voiceclient.CallOptions{SampleRate: 24000, CommitEvery: 50})
	call.Start(ctx, conn)
	signalled = true
	ready <- struct{}{}
	select {
	case <-h.stop:
	case <-ctx.Done():
	case <-conn.Done():
	}
	call.Finish(ctx, env.cfg.settle)
	sent := call.Sent()
	h.sent.Add(sent)
	h.echoed.Add(c.echoed.Load())
	h.lost.Add(sent - c.echoed.Load())
	end := conn.End()
	kind := endKind(end, false)
	if kind != "client 1000" {
		h.ab.Add(1)
		if end.Reason != "" {
			kind += " " + end.Reason
		}
	}
	h.stats.closes.add(kind, 1)
}

// finish hangs the callers up (each waits for its last echoes) and sums
// up what they saw.
func (h *honestCallers) finish() Honest {
	close(h.stop)
	h.wg.Wait()
	closes := h.stats.closes.snapshot()
	for k, v := range h.stats.dialFailures.snapshot() {
		if closes == nil {
			closes = map[string]int{}
		}
		closes["refused "+k] += v
	}
	return Honest{
		Sessions: int(h.started.Load()), Sent: h.sent.Load(), Echoed: h.echoed.Load(), Lost: h.lost.Load(),
		Late: summarize(h.stats.rtt.merged()), Abnormal: int(h.ab.Load()),
		Closes: closes, Errors: h.stats.errors.snapshot(),
	}
}

// abuseServer is the voice server process under attack.
type abuseServer struct {
	*childproc.Process
	public, admin string

	mu    sync.Mutex
	lines []string
}

// maxKeptLines bounds the server's log kept for the report.
const maxKeptLines = 100000

func startAbuseServer(ctx context.Context, cfg abuseConfig, dir string) (*abuseServer, error) {
	cmd := exec.Command(cfg.serverBin, cfg.serverArgs(dir)...)
	cmd.Env = append(os.Environ(), "GOMEMLIMIT="+strconv.FormatInt(cfg.gomemlimit, 10))
	dieWithParent(cmd)
	s := &abuseServer{}
	logFile, _ := os.Create(filepath.Join(dir, "server.log"))
	child, err := childproc.Start(ctx, cmd, childproc.Options{
		OnLine: func(line string, _ map[string]any) {
			if logFile != nil {
				fmt.Fprintln(logFile, line)
			}
			s.mu.Lock()
			if len(s.lines) < maxKeptLines {
				s.lines = append(s.lines, line)
			}
			s.mu.Unlock()
		},
	})
	if err != nil {
		// A child that did not start has exited: its log is complete.
		if logFile != nil {
			logFile.Close()
		}
		return nil, fmt.Errorf("the voice server: %w\n%s", err, lastLines(s.logs(), 20))
	}
	if logFile != nil {
		// Closed once the server's stderr is read to its end (every run
		// stops or kills its server).
		go func() {
			<-child.Exited()
			logFile.Close()
		}()
	}
	s.Process, s.public, s.admin = child, child.Public, child.Admin
	return s, nil
}

func (s *abuseServer) pid() int { return s.Pid() }

func (s *abuseServer) logs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.lines, "\n")
}

// stop sends SIGTERM and returns the exit code.
func (s *abuseServer) stop(timeout time.Duration) (int, error) {
	if !s.Stop(timeout) {
		return -1, errors.New("still running after SIGTERM")
	}
	return s.ExitCode()
}

// kill ends the process if it still runs and waits for it.
func (s *abuseServer) kill() { s.Kill() }

func lastLines(text string, n int) string {
	lines := strings.Split(text, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// writeAbuseTable prints the suite's table.
func writeAbuseTable(w io.Writer, r *AbuseReport) {
	fmt.Fprintf(w, "\nabuse: GOMEMLIMIT %d MiB (budget %d MiB), %d cores (%s), %s, load %s; %.0f s\n\n",
		r.GoMemLimit>>20, r.Budget>>20, r.Machine.Cores, r.Machine.CPU, r.Machine.Date, r.Machine.LoadAvg, r.DurationS)
	fmt.Fprint(w, abuseMarkdownHeader)
	fmt.Fprint(w, abuseMarkdown(r))
	verdict := "every limit held"
	if !r.Passed {
		verdict = "FAILED"
	}
	fmt.Fprintf(w, "\nabuse: %s; the voice server exited %d after SIGTERM\n", verdict, r.ExitCode)
}

const abuseMarkdownHeader = "| attack | the attacker did | and got | limit | held | peak RSS / GOMEMLIMIT | budget counted (peak) | honest sessions | lost frames | p99 echo lateness | abnormal closes |\n" +
	"|---|---|---|---|---|---|---|---|---|---|---|\n"

func abuseMarkdown(r *AbuseReport) string {
	var b strings.Builder
	for _, row := range r.Rows {
		held := "yes"
		if !row.Passed() {
			held = "**no**: " + strings.Join(append(row.Violations, honestFailures(row.Honest)...), "; ")
		}
		got := countMap(row.Got)
		if row.Detail != "" {
			got += "; " + row.Detail
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %.0f / %d MiB | %.0f / %d MiB | %d | %d | %s ms | %d |\n",
			row.Attack, row.Did, got, row.Limit, held, float64(row.PeakRSS)/(1<<20), r.GoMemLimit>>20,
			row.PeakReserved/(1<<20), r.Budget>>20, row.Honest.Sessions, row.Honest.Lost, msf(row.Honest.Late.P99), row.Honest.Abnormal)
	}
	return b.String()
}

func honestFailures(h Honest) []string {
	var out []string
	if h.Lost > 0 {
		out = append(out, fmt.Sprintf("%d honest frames lost", h.Lost))
	}
	if h.Abnormal > 0 {
		out = append(out, fmt.Sprintf("%d honest sessions cut or refused (%s)", h.Abnormal, countMap(h.Closes)))
	}
	if len(h.Errors) > 0 {
		out = append(out, "honest errors "+countMap(h.Errors))
	}
	return out
}
