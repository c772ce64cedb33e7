package lifecycle_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"k8s.io/utils/clock"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/voicegateway/voicegateway/internal/testkit"
	"github.com/voicegateway/voicegateway/server/backend/echo"
	"github.com/voicegateway/voicegateway/server/lifecycle"
	"github.com/voicegateway/voicegateway/server/metrics"
	"github.com/voicegateway/voicegateway/server/protocol"
	"github.com/voicegateway/voicegateway/server/session"
	"github.com/voicegateway/voicegateway/server/session/sessiontest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// epoch is when every test's fake clock starts.
var epoch = time.Date(2030, time.March, 4, 5, 6, 7, 0, time.UTC)

// hangTimeout bounds waits for things that happen in real time (network,
// goroutines) so that a broken drain fails the test instead of hanging it.
// It is never a measure of speed.
const hangTimeout = 10 * time.Second

func drainConfig() lifecycle.Config {
	return lifecycle.Config{
		DrainTimeout:     60 * time.Second,
		PropagationDelay: 5 * time.Second,
		NotifyWindow:     12 * time.Second,
		ReconnectAfter:   2 * time.Second,
		CloseTimeout:     2 * time.Second,
	}
}

// sessionConfig keeps the sessions' own timeouts out of the way: sessions
// run on the real clock, so the fake clock's waiters are the drainer's alone.
var sessionConfig = session.Config{
	MaxMessageBytes: 64 << 10,
	InboundRate:     100,
	InboundBurst:    100,
	OutboundQueue:   64,
	IdleTimeout:     time.Hour,
	MaxDuration:     time.Hour,
	WriteTimeout:    5 * time.Second,
	SampleRate:      24000,
}

// phaseRecorder wraps the drain phase gauge to keep every value set, so a
// test sees each phase even when the drain passes through it at once.
type phaseRecorder struct {
	prometheus.Gauge
	mu     sync.Mutex
	phases []lifecycle.Phase
}

func (r *phaseRecorder) Set(v float64) {
	r.mu.Lock()
	r.phases = append(r.phases, lifecycle.Phase(v))
	r.mu.Unlock()
	r.Gauge.Set(v)
}

func (r *phaseRecorder) seen() []lifecycle.Phase {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]lifecycle.Phase(nil), r.phases...)
}

// harness is a drainer on a fake clock over a registry of real sessions,
// served on loopback the way the gateway serves them.
type harness struct {
	t        *testing.T
	cfg      lifecycle.Config
	clk      *testingclock.FakeClock
	sessions *session.Registry
	metrics  *metrics.Server
	phases   *phaseRecorder
	drainer  *lifecycle.Drainer
	wsURL    string

	runOnce sync.Once
	runDone chan struct{}
	runErr  error
}

func newHarness(t *testing.T, cfg lifecycle.Config) *harness {
	t.Helper()
	// Registered first so it runs last, after every other cleanup.
	baseline := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, baseline) })

	h := &harness{
		t:        t,
		cfg:      cfg,
		clk:      testingclock.NewFakeClock(epoch),
		sessions: session.NewRegistry(100),
		metrics:  metrics.New(),
		runDone:  make(chan struct{}),
	}
	h.phases = &phaseRecorder{Gauge: h.metrics.DrainPhase}
	h.metrics.DrainPhase = h.phases
	h.drainer = lifecycle.NewDrainer(cfg, h.clk, h.sessions, h.metrics, logr.Discard())

	// Sessions are opened through the gateway's own admission path.
	h.wsURL = sessiontest.Serve(t, &session.Acceptor{
		Registry: h.sessions,
		Options: session.Options{
			Config: sessionConfig, Clock: clock.RealClock{}, Backend: echo.New(clock.RealClock{}),
			Metrics: h.metrics, Log: logr.Discard(),
		},
	})
	t.Cleanup(func() {
		h.drainer.Force()
		h.runOnce.Do(func() { close(h.runDone) }) // never started
		select {
		case <-h.runDone:
		case <-time.After(hangTimeout):
			t.Error("drain did not finish after Force")
		}
	})
	return h
}

// run starts the drain in the background.
func (h *harness) run(ctx context.Context) {
	h.runOnce.Do(func() {
		go func() {
			defer close(h.runDone)
			h.runErr = h.drainer.Run(ctx)
		}()
	})
}

// waitRun waits for Run to return and returns its error.
func (h *harness) waitRun() error {
	h.t.Helper()
	select {
	case <-h.runDone:
		return h.runErr
	case <-time.After(hangTimeout):
		h.t.Fatalf("drain did not finish (phase %v)", h.drainer.Phase())
		return nil
	}
}

// runFinished reports, without waiting, whether Run has returned.
func (h *harness) runFinished() bool {
	select {
	case <-h.runDone:
		return true
	default:
		return false
	}
}

// waitForTimer waits until the drainer is blocked on the fake clock, so that
// the next Step is seen by it. After a Step fires the timer the drainer was
// waiting on, the clock has no waiters until the drainer reaches its next wait.
func (h *harness) waitForTimer() {
	h.t.Helper()
	testkit.Eventually(h.t, hangTimeout, testkit.That("the drainer to wait on the clock", h.clk.HasWaiters))
}

// stepTo moves the fake clock to t.
func (h *harness) stepTo(t time.Time) {
	h.clk.Step(t.Sub(h.clk.Now()))
}

func (h *harness) deadline() time.Time { return h.drainer.Status().Deadline }

func (h *harness) notified() int { return h.drainer.Status().Notified }

// client is a WebSocket client that reads everything the server sends in
// the background, keeping the gateway.draining events and the close status.
type client struct {
	t    *testing.T
	conn *websocket.Conn

	created chan struct{}
	done    chan struct{}
	status  websocket.StatusCode // valid once done is closed
	errCode string               // code of the last error event, valid once done is closed

	mu        sync.Mutex
	drainings []map[string]any
}

// dial connects a client and waits until its session is registered (the
// backend greets only registered sessions).
func (h *harness) dial() *client {
	h.t.Helper()
	c := h.connect()
	select {
	case <-c.created:
	case <-c.done:
		h.t.Fatalf("session closed before it started: status %v", c.status)
	case <-time.After(hangTimeout):
		h.t.Fatal("no session.created")
	}
	return c
}

func (h *harness) dialN(n int) []*client {
	h.t.Helper()
	clients := make([]*client, n)
	for i := range clients {
		clients[i] = h.dial()
	}
	return clients
}

func (h *harness) connect() *client {
	h.t.Helper()
	c := h.connectQuiet()
	go c.readLoop()
	return c
}

// deafClient connects a client that reads its greeting and then nothing:
// it never answers a close frame.
func (h *harness) deafClient() *client {
	h.t.Helper()
	c := h.connectQuiet()
	ctx, cancel := context.WithTimeout(context.Background(), hangTimeout)
	defer cancel()
	_, data, err := c.conn.Read(ctx)
	if err != nil || !strings.Contains(string(data), `"`+protocol.TypeSessionCreated+`"`) {
		h.t.Fatalf("first message %q, %v; want session.created", data, err)
	}
	close(c.created)
	close(c.done)
	return c
}

// connectQuiet dials without starting the client's reader.
func (h *harness) connectQuiet() *client {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangTimeout)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, h.wsURL, nil)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		h.t.Fatalf("dial: %v", err)
	}
	c := &client{t: h.t, conn: conn, created: make(chan struct{}), done: make(chan struct{})}
	h.t.Cleanup(func() {
		_ = conn.CloseNow()
		select {
		case <-c.done:
		case <-time.After(hangTimeout):
			h.t.Error("client reader did not stop")
		}
	})
	return c
}

func (c *client) readLoop() {
	defer close(c.done)
	for {
		typ, data, err := c.conn.Read(context.Background())
		if err != nil {
			c.status = websocket.CloseStatus(err)
			return
		}
		if typ != websocket.MessageText {
			continue
		}
		var ev map[string]any
		if err := json.Unmarshal(data, &ev); err != nil {
			continue
		}
		switch ev["type"] {
		case protocol.TypeSessionCreated:
			close(c.created)
		case protocol.TypeGatewayDraining:
			c.mu.Lock()
			c.drainings = append(c.drainings, ev)
			c.mu.Unlock()
		case protocol.TypeError:
			if body, ok := ev["error"].(map[string]any); ok {
				c.errCode, _ = body["code"].(string)
			}
		}
	}
}

func (c *client) drainingEvents() []map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]map[string]any(nil), c.drainings...)
}

// closed reports, without waiting, whether the connection has closed.
func (c *client) closed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// waitClosed waits for the connection to close and returns the close status
// the client received.
func (c *client) waitClosed() websocket.StatusCode {
	c.t.Helper()
	select {
	case <-c.done:
		return c.status
	case <-time.After(hangTimeout):
		c.t.Fatal("connection did not close")
		return -1
	}
}

// receivedDraining counts the clients that have received gateway.draining.
func receivedDraining(clients []*client) int {
	n := 0
	for _, c := range clients {
		if len(c.drainingEvents()) > 0 {
			n++
		}
	}
	return n
}
