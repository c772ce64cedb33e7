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
	"os"
	"os/signal"
	"strings"
	"syscall"
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

Run "vgload <command> -h" for the flags of each.
`

// run dispatches a command line; it is main without the process around it.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command")
	}
	cmd, args := args[0], args[1:]
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
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
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

// newFlagSet returns a flag set that reports errors instead of exiting.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("vgload "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
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

// gateError is a failed check (soak growth, lost frames with --fail-on-loss):
// exit status 1, where a usage or setup problem is 2.
type gateError struct{ msg string }

func (e *gateError) Error() string { return e.msg }
