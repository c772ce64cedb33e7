// Command vgload is a load client for the voice gateway: it holds many
// concurrent sessions, sends audio paced in real time (20 ms PCM16 frames,
// binary or base64), and measures what a caller would notice — connect
// time, echo round trip, lost and late frames (exactly: each frame carries a
// sequence number and its send time), close and error codes, and, when the
// server drains, how long each caller's audio stopped while it moved.
//
// Subcommands:
//
//	vgload relay           sessions talking through a gateway (and first through a plain echo baseline)
//	vgload idle            idle sessions held open, for the server's memory per session
//	vgload drain           sessions talking while the server is sent SIGTERM, timing the drain
//	vgload baseline-server a plain WebSocket echo, the baseline the gateway's latency is compared with
//	vgload soak            session churn for a duration, sampling the server for leaks
//	vgload flood           failed authentications from many addresses against the auth rate limiter
//	vgload abuse           every known attack on a real server beside honest callers (make abuse)
//
// The sessions are internal/voiceclient's, the client test/e2e and the
// voice server's tests talk with too.
//
// vgload talks to loopback addresses only unless --allow-remote is given.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/voicegateway/voicegateway/server/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		var ge *gateError
		if errors.As(err, &ge) {
			fmt.Fprintln(os.Stderr, "vgload:", err)
			os.Exit(1)
		}
		fmt.Fprintln(os.Stderr, "vgload:", err)
		os.Exit(2)
	}
}

const usage = `Usage: vgload <command> [flags]

Commands:
  relay            sessions with real-time audio through a gateway (and a plain echo baseline)
  idle             idle sessions held open: the server's memory per session
  drain            sessions talking while the server drains after a SIGTERM
  baseline-server  a plain WebSocket echo server, the latency baseline
  soak             session churn for a duration; samples the server for leaks
  flood            failed authentications from many client addresses
  abuse            every known attack on a real voice server, with honest callers beside it

Run "vgload <command> -h" for the flags of each.
`

// commandHelp is each command's description in its -h.
var commandHelp = map[string]string{
	"relay": "Holds --sessions sessions that talk to a gateway in real time (20 ms PCM16 frames, each stamped\n" +
		"with its sequence and send time) and reports connect time, round trip, lost and late frames,\n" +
		"close and error codes; with --baseline-url the same load first runs against a plain echo.",
	"idle": "Holds --sessions sessions that send nothing and reports the server's memory per session\n" +
		"(with --admin and the admin token).",
	"drain": "Holds talking sessions, sends the server (--server-pid) SIGTERM --sigterm-after into the steady\n" +
		"state and times the drain: notices, moves to the next --url, audio gaps, closes.",
	"baseline-server": "Serves a plain WebSocket echo: the latency baseline relay compares the gateway with.",
	"soak": "Churns sessions of every kind for --duration, sampling the server's goroutines, open files\n" +
		"and heap (/debug/memstats); with --gate exits 1 if they grew.",
	"flood": "Fails authentication from --ips client addresses at once against the auth rate limiter, while a\n" +
		"legitimate client keeps minting tokens; reports its latency and the limiter's memory.",
	"abuse": "Starts the voice server (--server) under GOMEMLIMIT and runs each attack alone, then all together,\n" +
		"with --honest callers talking beside each; prints peak RSS, what the attacker got and what the\n" +
		"honest callers saw, and exits 1 if a caller lost a frame or was cut, or an attacker passed its limit.",
	"abuse-honest": "vgload abuse's honest callers in a process of their own (started by vgload abuse): they talk\n" +
		"until stdin closes, then print what they saw as JSON.",
}

// exit statuses: 0 the run succeeded; 1 it ran and failed (a check, or
// no session could reach the gateway); 2 the command line was wrong.
//
// run dispatches a command line; it is main without the process around it.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command")
	}
	cmd, args := args[0], args[1:]
	if cmd == "help" && len(args) > 0 {
		// "vgload help relay" is "vgload relay -h".
		cmd, args = args[0], []string{"-h"}
	}
	switch cmd {
	case "relay":
		return cmdRelay(ctx, args, stdout, stderr)
	case "idle":
		return cmdIdle(ctx, args, stdout, stderr)
	case "drain":
		return cmdDrain(ctx, args, stdout, stderr)
	case "baseline-server":
		return cmdBaseline(ctx, args, stdout, stderr)
	case "soak":
		return cmdSoak(ctx, args, stdout, stderr)
	case "flood":
		return cmdFlood(ctx, args, stdout, stderr)
	case "abuse":
		return cmdAbuse(ctx, args, stdout, stderr)
	case "abuse-honest":
		// vgload abuse's honest callers, in a process of their own.
		return cmdAbuseHonest(ctx, args, os.Stdin, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, version.String("vgload"))
		return nil
	}
	fmt.Fprint(stderr, usage)
	if cmd == "run" {
		return errors.New(`"run" is now three commands: relay, idle (was --idle) and drain (was --sigterm-after)`)
	}
	return fmt.Errorf("unknown command %q", cmd)
}

// listFlag is a flag that may be repeated.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	*l = append(*l, v)
	return nil
}

// newFlagSet returns a flag set that reports errors instead of exiting,
// and whose -h says what the command does and lists its own flags.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("vgload "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: vgload %s [flags]\n\n%s\n\nFlags of vgload %s:\n", name, commandHelp[name], name)
		fs.PrintDefaults()
	}
	return fs
}

// checkReachable dials each URL's host once, so that a run against an
// address where nothing listens fails at once and says so, rather than
// reporting a run of refused connections.
func checkReachable(ctx context.Context, allowRemote bool, urls ...string) error {
	for _, u := range urls {
		if u == "" {
			continue
		}
		parsed, err := url.Parse(u)
		if err != nil {
			return err
		}
		host := parsed.Host
		if parsed.Port() == "" {
			port := "80"
			if parsed.Scheme == "wss" || parsed.Scheme == "https" {
				port = "443"
			}
			host = net.JoinHostPort(parsed.Hostname(), port)
		}
		dialCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := guardedDialer(allowRemote).DialContext(dialCtx, "tcp", host)
		cancel()
		if err != nil {
			return &gateError{fmt.Sprintf("nothing answers at %s (%v): is the gateway running, and is the URL right?", u, err)}
		}
		_ = conn.Close()
	}
	return nil
}

// writeJSON writes v to path ("-" for stdout).
func writeJSON(path string, stdout io.Writer, v any) error {
	if path == "" {
		return nil
	}
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	if path == "-" {
		_, err = stdout.Write(data)
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

// appendFile appends text to path, creating it.
func appendFile(path, text string) error {
	if path == "" {
		return nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteString(text)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// gateError is a failed run (soak growth, lost frames with --fail-on-loss,
// a gateway that cannot be reached or took no session): exit status 1,
// where a usage problem is 2.
type gateError struct{ msg string }

func (e *gateError) Error() string { return e.msg }
