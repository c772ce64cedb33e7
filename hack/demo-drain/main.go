// Command demo-drain is `make demo-drain`: two voice servers (echo backend,
// authentication off, on loopback) behind a small proxy that sends each new
// connection to a server whose /readyz passes, as a Kubernetes Service does.
// Open the demo page through the proxy, start talking, then press Enter: the
// server your call is on drains, the page is told gateway.draining, moves the
// call to the other server and keeps talking. The drained server is started
// again once it has exited, so the demo can be repeated. Ctrl-C stops it all.
//
//	go run ./hack/demo-drain --voice-server bin/voice-server
//
// SIGUSR1 drains like Enter (the browser test sends it). Its first log line
// on stderr is the voice server's {"msg":"listening","public":...} shape,
// naming the proxy's address.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/voicegateway/voicegateway/internal/childproc"
	"github.com/voicegateway/voicegateway/internal/serviceproxy"
	"github.com/voicegateway/voicegateway/server/admin/adminapi"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "demo-drain:", err)
		os.Exit(1)
	}
}

// drainSteps are the voice server's log lines a person watching the demo
// wants to see.
var drainSteps = []string{"termination begun: readiness now fails", "refusing new sessions", "drain finished", "stopped cleanly"}

// server is one voice server child process.
type server struct {
	name string
	*childproc.Process
}

type demo struct {
	bin   string
	args  []string
	out   io.Writer
	probe *http.Client

	mu      sync.Mutex
	servers []*server
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo-drain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	bin := fs.String("voice-server", filepath.Join("bin", "voice-server"), "the voice server binary (make build-voice-server)")
	listen := fs.String("listen", "127.0.0.1:8080", "address of the proxy, where the demo page is")
	drainTimeout := fs.Duration("drain-timeout", 30*time.Second, "each server's --drain-timeout: calls may stay this long after a drain begins")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// Everything it says goes to stderr, after the listening line, as the
	// voice server logs; stdout stays empty. The servers inherit the
	// environment, so their log format is set by flags, which win over
	// VOICEGATEWAY_LOG_FORMAT and VOICEGATEWAY_DEV: the demo reads their
	// JSON lines.
	d := &demo{
		bin: *bin, out: stderr,
		args: []string{"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--backend", "echo", "--insecure-no-auth",
			"--log-format", "json", "--dev=false", "--log-level", "info", "--drain-timeout", drainTimeout.String(), "--exit-margin", "3s",
			"--propagation-delay", "1s", "--notify-window", "1s", "--reconnect-after", "500ms"},
		probe: &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
	}
	defer d.probe.CloseIdleConnections()
	// The two servers share a fleet Secret, as a VoiceGateway's pods do:
	// each opens the other's resume handles, so a call moved by a drain
	// keeps its conversation (for the echo: its session id and turns).
	fleetDir, err := os.MkdirTemp("", "vgw-demo-fleet-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(fleetDir)
	secretDir := filepath.Join(fleetDir, "fleet")
	if out, err := exec.CommandContext(ctx, d.bin, "fleet-secret", "init", "--dir", secretDir).CombinedOutput(); err != nil {
		return fmt.Errorf("%s fleet-secret init: %w\n%s", d.bin, err, out)
	}
	d.args = append(d.args, "--fleet-secret-dir", secretDir)
	for _, name := range []string{"A", "B"} {
		s, err := d.start(name)
		if err != nil {
			d.stopAll()
			return err
		}
		d.servers = append(d.servers, s)
	}
	defer d.stopAll()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	proxy := serviceproxy.Start(ln, d.ready)
	defer proxy.Close()
	line, _ := json.Marshal(map[string]string{"msg": "listening", "public": ln.Addr().String()})
	fmt.Fprintln(stderr, string(line))
	fmt.Fprintf(stderr, "\nTwo voice servers behind a proxy: open http://%s/ and press \"Start talking\" (headphones!).\n"+
		"Then press Enter here: the server your call is on drains, and the page moves the call to the other one.\n"+
		"Ctrl-C stops everything.\n\n", ln.Addr())

	drains := make(chan struct{}, 1)
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	// Enter on stdin drains too. The reader ends with stdin (never, on a
	// terminal): it only ever sends, and the channel's buffer of one keeps
	// it from blocking the exit.
	go func() {
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			select {
			case drains <- struct{}{}:
			default:
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(stderr, "stopping both servers")
			return nil
		case <-usr1:
		case <-drains:
		}
		if err := d.drainBusiest(ctx); err != nil {
			fmt.Fprintln(stderr, "drain:", err)
		}
	}
}

// start runs one voice server and waits for its listening line.
func (d *demo) start(name string) (*server, error) {
	child, err := childproc.Start(context.Background(), exec.Command(d.bin, d.args...), childproc.Options{
		OnLine: func(line string, entry map[string]any) {
			if entry == nil {
				fmt.Fprintf(d.out, "  [server %s] %s\n", name, line)
				return
			}
			// The drain's steps, and anything that went wrong.
			msg, _ := entry["msg"].(string)
			if level, _ := entry["level"].(string); level == "warn" || level == "error" && !strings.HasPrefix(msg, "AUTHENTICATION IS OFF") ||
				slices.Contains(drainSteps, msg) {
				fmt.Fprintf(d.out, "  [server %s] %s\n", name, msg)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("server %s (%s; build it with make build-voice-server): %w", name, d.bin, err)
	}
	s := &server{name: name, Process: child}
	fmt.Fprintf(d.out, "server %s: sessions on %s, admin on %s (pid %d)\n", name, s.Public, s.Admin, s.Pid())
	return s, nil
}

// ready returns the public address of a server whose /readyz passes.
func (d *demo) ready() string {
	d.mu.Lock()
	servers := append([]*server(nil), d.servers...)
	d.mu.Unlock()
	for _, s := range servers {
		resp, err := d.probe.Get("http://" + s.Admin + "/readyz")
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return s.Public
		}
	}
	return ""
}

// drainBusiest sends SIGTERM to the server with the most sessions, waits
// for it to exit and starts it again.
func (d *demo) drainBusiest(ctx context.Context) error {
	d.mu.Lock()
	servers := append([]*server(nil), d.servers...)
	d.mu.Unlock()
	busiest, most := -1, -1
	for i, s := range servers {
		c, err := adminapi.NewClient(s.Admin, adminapi.ClientOptions{})
		if err != nil {
			return err
		}
		st, err := c.Status(ctx)
		if err != nil || st.Draining {
			continue
		}
		if st.Sessions > most {
			busiest, most = i, st.Sessions
		}
	}
	if busiest < 0 {
		return errors.New("no server is serving")
	}
	s := servers[busiest]
	fmt.Fprintf(d.out, "draining server %s (%d sessions): its callers are told gateway.draining and move to the other server\n", s.name, most)
	_ = s.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.Exited():
	case <-ctx.Done():
		return nil
	}
	fmt.Fprintf(d.out, "server %s drained and exited (%s); starting it again\n", s.name, s.Cmd.ProcessState)
	again, err := d.start(s.name)
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.servers[busiest] = again
	d.mu.Unlock()
	return nil
}

// stopAll sends every server SIGTERM and waits for them (SIGKILL after 45 s).
func (d *demo) stopAll() {
	d.mu.Lock()
	servers := append([]*server(nil), d.servers...)
	d.mu.Unlock()
	for _, s := range servers {
		_ = s.Cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, s := range servers {
		// Not Stop: a second SIGTERM would cut the drain short.
		select {
		case <-s.Exited():
		case <-time.After(45 * time.Second):
			s.Kill()
		}
	}
}
