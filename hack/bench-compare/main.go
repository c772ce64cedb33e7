// Command bench-compare is `make bench-compare`: the same vgload loads run
// side by side, in one run, against the voice server (echo backend, auth
// off) and against a bare Node.js WebSocket echo built on the `ws` library
// (bench/node-peer, pinned by its package-lock.json): talking sessions at
// a few counts, then idle sessions. Each server runs as a child process on
// the server cores, vgload on the client cores (taskset), one server at a
// time and a fresh one for every load. It prints the table of issue 21
// with a ratio column (voice server ÷ Node: CPU while talking, memory per
// idle session) and writes it as JSON and markdown into --out, beside an
// SVG chart of CPU and memory per session against the session count.
//
// With --rounds N each load runs N times against each server, the order
// alternating round by round (voice server then Node, Node then voice
// server, …) so that a machine growing busier or quieter over a row weighs
// on both sides alike. On a shared machine one run's CPU moves by a
// quarter from one minute to the next; the table shows each figure's
// median over the rounds and the range of the per-round ratios, and
// report.json keeps every run.
//
// CPU is the server process's utime+stime over vgload's steady state only
// (vgload reads /proc/<pid>/stat at its start and end), and its kernel part
// stime alone; peak RSS is the
// server's VmHWM when the load ends; memory per idle session is the growth
// of its RSS per session held; echo lateness and lost frames are vgload's.
//
// Without node or npm on PATH it says so and exits 0: the comparison needs
// them, the voice server does not.
//
//	go run ./hack/bench-compare --voice-server bin/voice-server --vgload bin/vgload
//	go run ./hack/bench-compare --talking 150 --idle 2000 --duration 10s --rounds 3
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/voicegateway/voicegateway/internal/childproc"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "bench-compare:", err)
		os.Exit(1)
	}
}

// config is a run's settings.
type config struct {
	voiceServer, vgload    string
	peerDir, node, npm     string
	talking, idle          []int
	duration, idleHold     time.Duration
	out                    string
	rounds                 int
	serverCPUs, clientCPUs string
	// runOne stands in for measureSide in tests; nil: measureSide.
	runOne func(ctx context.Context, name, kind string, n int, suffix string) (Side, error)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench-compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg config
	fs.StringVar(&cfg.voiceServer, "voice-server", filepath.Join("bin", "voice-server"), "the voice server binary")
	fs.StringVar(&cfg.vgload, "vgload", filepath.Join("bin", "vgload"), "the vgload binary")
	fs.StringVar(&cfg.peerDir, "peer-dir", filepath.Join("bench", "node-peer"), "the Node peer (peer.mjs, package-lock.json)")
	fs.StringVar(&cfg.node, "node", "node", "the Node.js binary (20 or later)")
	fs.StringVar(&cfg.npm, "npm", "npm", "npm, which installs the peer's locked dependencies (npm ci)")
	talkingList := fs.String("talking", "50,150,300", "talking session counts, comma-separated")
	idleList := fs.String("idle", "2000", "idle session counts, comma-separated")
	fs.DurationVar(&cfg.duration, "duration", 20*time.Second, "steady state of each talking load, after its ramp")
	fs.DurationVar(&cfg.idleHold, "idle-hold", 5*time.Second, "how long idle sessions are held before the server's memory is read")
	fs.IntVar(&cfg.rounds, "rounds", 1, "runs of each load against each server, alternating which goes first; the table shows medians and the range of the per-round ratios")
	fs.StringVar(&cfg.out, "out", filepath.Join("bin", "bench-compare"), "output folder: report.json, report.md, bench-compare.svg, logs")
	serverCPUs, clientCPUs := defaultPinning()
	fs.StringVar(&cfg.serverCPUs, "server-cpus", serverCPUs, "taskset core list of the server under test; empty: not pinned")
	fs.StringVar(&cfg.clientCPUs, "client-cpus", clientCPUs, "taskset core list of vgload; empty: not pinned")
	replot := fs.String("replot", "", "measure nothing: write the table and chart of this report.json into --out")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *replot != "" {
		return replotReport(*replot, cfg.out, stdout)
	}
	if cfg.rounds < 1 {
		return fmt.Errorf("--rounds: %d is not a positive count", cfg.rounds)
	}
	var err error
	if cfg.talking, err = counts(*talkingList); err != nil {
		return fmt.Errorf("--talking: %w", err)
	}
	if cfg.idle, err = counts(*idleList); err != nil {
		return fmt.Errorf("--idle: %w", err)
	}
	for _, tool := range []string{cfg.node, cfg.npm} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(stdout, "bench-compare: skipped: %s is not on PATH; the Node peer it compares the voice server with needs Node.js 20+ and npm\n", tool)
			return nil
		}
	}
	for _, bin := range []string{cfg.voiceServer, cfg.vgload} {
		if _, err := os.Stat(bin); err != nil {
			return fmt.Errorf("%w (make bench-compare builds it)", err)
		}
	}
	if err := ensurePeerInstalled(ctx, cfg.npm, cfg.peerDir, stderr); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.out, 0o755); err != nil {
		return err
	}
	raiseOpenFileLimit()

	report := Report{Machine: describeMachine(ctx, cfg), Settings: settings(cfg)}
	fmt.Fprintf(stdout, "== %s\n", report.Machine.line())
	for _, n := range cfg.talking {
		report.Rows = append(report.Rows, cfg.measure(ctx, stdout, talking, n))
	}
	for _, n := range cfg.idle {
		report.Rows = append(report.Rows, cfg.measure(ctx, stdout, idle, n))
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	report.Machine.LoadAvgEnd = loadAverage()
	return report.write(cfg.out, stdout)
}

// replotReport writes the table and chart of a saved report again, e.g.
// after the chart's code changed.
func replotReport(path, out string, stdout io.Writer) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var r Report
	if err := json.Unmarshal(data, &r); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	return r.write(out, stdout)
}

// defaultPinning puts the server under test on core 1 and vgload on core 0
// when the machine has two cores or more and taskset is there, as
// hack/bench.sh does: each side has a core of its own, and the server's
// CPU figures are not the client's.
func defaultPinning() (server, client string) {
	if runtime.NumCPU() < 2 {
		return "", ""
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		return "", ""
	}
	return "1", "0"
}

func counts(list string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(list, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive count", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// measure runs one load cfg.rounds times, each round against the voice
// server and the Node peer back to back, each run on a fresh process; odd
// rounds start with the voice server, even rounds with Node.
func (cfg config) measure(ctx context.Context, stdout io.Writer, kind string, n int) Row {
	runOne := cfg.measureSide
	if cfg.runOne != nil {
		runOne = cfg.runOne
	}
	var rounds []Round
	for i := 1; i <= cfg.rounds; i++ {
		if i > 1 && ctx.Err() != nil {
			break
		}
		round := Round{LoadAvg: strings.Fields(loadAverage())[0], NodeFirst: i%2 == 0}
		sides := []struct {
			name string
			into *Side
		}{{"voice-server", &round.VoiceServer}, {"node-peer", &round.Node}}
		if round.NodeFirst {
			sides[0], sides[1] = sides[1], sides[0]
		}
		for _, side := range sides {
			fmt.Fprintf(stdout, "== %d %s sessions%s: %s\n", n, kind, cfg.roundLabel(i), side.name)
			s, err := runOne(ctx, side.name, kind, n, cfg.runSuffix(i))
			if err != nil {
				s = Side{Error: err.Error()}
				fmt.Fprintf(stdout, "   failed: %v\n", err)
			} else if kind == talking {
				fmt.Fprintf(stdout, "   CPU %.2f cores (%s kernel), peak RSS %.0f MiB, p99 echo lateness %.1f ms, %d of %d frames lost; vgload send lag p99 %.1f ms\n",
					s.CPUCores, kernelCores(s), float64(s.PeakRSSBytes)/kib/kib, s.P99LatenessMS, s.FramesLost, s.FramesSent, s.SendLagP99MS)
			} else {
				fmt.Fprintf(stdout, "   %d sessions held, RSS %.1f KiB per session, peak RSS %.0f MiB\n",
					s.SessionsReady, s.IdleBytesPerSession/kib, float64(s.PeakRSSBytes)/kib/kib)
			}
			*side.into = s
		}
		rounds = append(rounds, round)
		if cfg.rounds > 1 {
			one := Row{Kind: kind, Sessions: n, Rounds: []Round{round}}
			fmt.Fprintf(stdout, "   round %d of %d: voice server ÷ Node %s\n", i, cfg.rounds, one.ratioColumn())
		}
	}
	row := summarize(kind, n, rounds)
	if cfg.rounds > 1 {
		fmt.Fprintf(stdout, "== %d %s sessions, median of %d rounds: voice server ÷ Node %s\n", n, kind, len(rounds), row.ratioColumn())
	}
	return row
}

// roundLabel names round i in the progress lines when there are several.
func (cfg config) roundLabel(i int) string {
	if cfg.rounds == 1 {
		return ""
	}
	return fmt.Sprintf(", round %d of %d", i, cfg.rounds)
}

// runSuffix tells round i's files apart from the other rounds'; a run of
// one round names its files as before rounds existed.
func (cfg config) runSuffix(i int) string {
	if cfg.rounds == 1 {
		return ""
	}
	return fmt.Sprintf("-r%d", i)
}

// measureSide starts one server, runs vgload against it and reads what
// they measured.
func (cfg config) measureSide(ctx context.Context, name, kind string, n int, suffix string) (Side, error) {
	base := filepath.Join(cfg.out, fmt.Sprintf("%s-%s-%d%s", name, kind, n, suffix))
	serverLog, err := os.Create(base + ".server.log")
	if err != nil {
		return Side{}, err
	}
	defer serverLog.Close()
	var argv []string
	if name == "voice-server" {
		argv = []string{cfg.voiceServer, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
			"--backend", "echo", "--insecure-no-auth", "--propagation-delay", "0s",
			"--session-limit", strconv.Itoa(n + 100), "--idle-timeout", "10m"}
	} else {
		argv = []string{cfg.node, filepath.Join(cfg.peerDir, "peer.mjs"), "--listen", "127.0.0.1:0"}
	}
	server, err := childproc.Start(ctx, pinned(ctx, cfg.serverCPUs, argv...), childproc.Options{
		OnLine: func(line string, _ map[string]any) { fmt.Fprintln(serverLog, line) },
	})
	if err != nil {
		return Side{}, fmt.Errorf("starting %s: %w (log: %s)", name, err, serverLog.Name())
	}
	defer server.Stop(10 * time.Second)

	url := "ws://" + server.Public + "/v1/realtime"
	command := "idle"
	// As hack/bench.sh: connects spread over a ramp that grows with the
	// count; talking sessions send 1 s turns (vgload's default).
	ramp, hold := n/1000*2+2, cfg.idleHold
	if kind == talking {
		command, ramp, hold = "relay", n/200+2, cfg.duration
	}
	// A report left by an earlier run must not stand in for this one's.
	if err := os.Remove(base + ".json"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return Side{}, err
	}
	load := pinned(ctx, cfg.clientCPUs, cfg.vgload, command, "--sessions", strconv.Itoa(n), "--url", url,
		"--ramp", fmt.Sprintf("%ds", ramp), "--duration", hold.String(),
		"--server-pid", strconv.Itoa(server.Pid()), "--json", base+".json", "--quiet")
	// Interrupted, vgload ends its sessions and still writes its report.
	load.Cancel = func() error { return load.Process.Signal(os.Interrupt) }
	output, err := load.CombinedOutput()
	_ = os.WriteFile(base+".vgload.log", output, 0o644)
	if err != nil {
		return Side{}, fmt.Errorf("vgload %s: %w: %s", kind, err, lastLine(output))
	}
	side, err := readVgload(base + ".json")
	if err != nil {
		return Side{}, err
	}
	if side.PeakRSSBytes, err = peakRSS(server.Pid()); err != nil {
		return Side{}, err
	}
	return side, nil
}

// pinned is argv under taskset on cpus, or as it is when cpus is empty;
// taskset execs the program, so the child's pid is the program's.
func pinned(ctx context.Context, cpus string, argv ...string) *exec.Cmd {
	if cpus != "" {
		argv = append([]string{"taskset", "-c", cpus}, argv...)
	}
	return exec.CommandContext(ctx, argv[0], argv[1:]...)
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// vgloadReport is the part of vgload's JSON report read here.
type vgloadReport struct {
	Gateway struct {
		SessionsReady int64   `json:"sessions_ready"`
		ServerCPU     float64 `json:"server_cpu_cores"`
		ClientCPU     float64 `json:"client_cpu_cores"`
		// The kernel's parts, missing (-1) from a vgload older than them.
		ServerCPUSystem float64 `json:"server_cpu_system_cores"`
		ClientCPUSystem float64 `json:"client_cpu_system_cores"`
		RTT             struct {
			P50 float64 `json:"p50_ms"`
			P99 float64 `json:"p99_ms"`
		} `json:"rtt"`
		SendLag struct {
			P99 float64 `json:"p99_ms"`
		} `json:"send_lag"`
		Frames struct {
			Sent int64 `json:"sent"`
			Lost int64 `json:"lost"`
			Late int64 `json:"late"`
		} `json:"frames"`
		Memory *struct {
			RSSPerSession float64 `json:"rss_per_session_bytes"`
		} `json:"memory"`
	} `json:"gateway"`
}

func readVgload(path string) (Side, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Side{}, err
	}
	var r vgloadReport
	r.Gateway.ServerCPUSystem, r.Gateway.ClientCPUSystem = -1, -1
	if err := json.Unmarshal(data, &r); err != nil {
		return Side{}, fmt.Errorf("%s: %w", path, err)
	}
	g := r.Gateway
	s := Side{
		CPUCores: g.ServerCPU, CPUSystemCores: g.ServerCPUSystem,
		ClientCPUCores: g.ClientCPU, ClientCPUSystemCores: g.ClientCPUSystem, SessionsReady: g.SessionsReady,
		P50LatenessMS: g.RTT.P50, P99LatenessMS: g.RTT.P99, SendLagP99MS: g.SendLag.P99,
		FramesSent: g.Frames.Sent, FramesLost: g.Frames.Lost, FramesLate: g.Frames.Late,
	}
	if g.Memory != nil {
		s.IdleBytesPerSession = g.Memory.RSSPerSession
	}
	return s, nil
}

// peakRSS is pid's VmHWM, its largest resident set so far, in bytes.
func peakRSS(pid int) (uint64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, err := strconv.ParseUint(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// raiseOpenFileLimit lifts the soft open-file limit to the hard one for
// this process and the children it starts: thousands of sessions need a
// descriptor each on both sides.
func raiseOpenFileLimit() {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}
