package admin

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"go.uber.org/goleak"
	"k8s.io/utils/clock"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/voicegateway/voicegateway/internal/testkit"
	"github.com/voicegateway/voicegateway/server/backend/echo"
	"github.com/voicegateway/voicegateway/server/lifecycle"
	"github.com/voicegateway/voicegateway/server/metrics"
	"github.com/voicegateway/voicegateway/server/ratelimit"
	"github.com/voicegateway/voicegateway/server/session"
	"github.com/voicegateway/voicegateway/server/session/sessiontest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// epoch is when every test's fake clock starts.
var epoch = time.Date(2030, time.March, 4, 5, 6, 7, 0, time.UTC)

// hangTimeout bounds real-time waits so that a hung handler fails the test
// instead of hanging it; it is never a measure of speed.
const hangTimeout = 10 * time.Second

const sessionLimit = 10

var drainConfig = lifecycle.Config{
	DrainTimeout:     60 * time.Second,
	PropagationDelay: 5 * time.Second,
	NotifyWindow:     10 * time.Second,
	ReconnectAfter:   2 * time.Second,
	CloseTimeout:     2 * time.Second,
}

// harness is the admin handler on loopback over a real drainer (running,
// on a fake clock), session registry, metrics and rate limiter.
type harness struct {
	t        *testing.T
	clk      *testingclock.FakeClock
	sessions *session.Registry
	metrics  *metrics.Server
	limiter  *ratelimit.Limiter
	drainer  *lifecycle.Drainer
	handler  http.Handler
	url      string
	client   *http.Client
	// inFlight counts admin requests whose handler has not returned.
	inFlight atomic.Int32
	runDone  chan struct{}

	wsOnce sync.Once
	wsURL  string
}

// testAdminToken is the admin token of every harness unless an option
// changes it.
const testAdminToken = "vgw_admin_test-token-0123456789abcdef"

// staticToken is a fixed admin token source.
type staticToken string

func (s staticToken) Value() string { return string(s) }

// newHarness builds a harness whose admin endpoints take testAdminToken and
// whose debug endpoints are on; options change the handler's Options.
func newHarness(t *testing.T, options ...func(*Options)) *harness {
	t.Helper()
	// Registered first so it runs last, after every other cleanup.
	baseline := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, baseline) })

	h := &harness{
		t:        t,
		clk:      testingclock.NewFakeClock(epoch),
		sessions: session.NewRegistry(sessionLimit),
		metrics:  metrics.New(),
		runDone:  make(chan struct{}),
	}
	var err error
	if h.limiter, err = ratelimit.New(ratelimit.Config{}, h.clk); err != nil {
		t.Fatal(err)
	}
	h.metrics.Registry.MustRegister(h.limiter)
	h.drainer = lifecycle.NewDrainer(drainConfig, h.clk, h.sessions, h.metrics, logr.Discard())
	opts := Options{
		AdminToken: staticToken(testAdminToken), DebugEndpoints: true,
		Drainer: h.drainer, Sessions: h.sessions, Metrics: h.metrics,
		Backend: echo.Name, SessionLimit: sessionLimit, Clock: h.clk, Started: h.clk.Now(),
		Log: logr.Discard(),
	}
	for _, o := range options {
		o(&opts)
	}
	h.handler = NewHandler(opts)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.inFlight.Add(1)
		defer h.inFlight.Add(-1)
		h.handler.ServeHTTP(w, r)
	}))
	h.url, h.client = srv.URL, srv.Client()
	go func() {
		defer close(h.runDone)
		_ = h.drainer.Run(context.Background())
	}()
	t.Cleanup(func() {
		h.drainer.Force()
		select {
		case <-h.runDone:
		case <-time.After(hangTimeout):
			t.Error("drain did not finish after Force")
		}
		srv.Close()
	})
	return h
}

// waitRun waits for the drain to finish.
func (h *harness) waitRun() {
	h.t.Helper()
	select {
	case <-h.runDone:
	case <-time.After(hangTimeout):
		h.t.Fatalf("drain did not finish (phase %v)", h.drainer.Phase())
	}
}

// waitForTimer waits until the drainer is blocked on the fake clock.
func (h *harness) waitForTimer() {
	h.t.Helper()
	testkit.Eventually(h.t, hangTimeout, testkit.That("the drainer to wait on the clock", h.clk.HasWaiters))
}

// do sends a request with the admin token to the admin handler and returns
// the status, the Content-Type and the body.
func (h *harness) do(method, path string, body io.Reader) (int, string, string) {
	h.t.Helper()
	return h.doAs("Bearer "+testAdminToken, method, path, body)
}

// doAs is do with the given Authorization header ("" sends none).
func (h *harness) doAs(authorization, method, path string, body io.Reader) (int, string, string) {
	h.t.Helper()
	req, err := http.NewRequest(method, h.url+path, body)
	if err != nil {
		h.t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(data)
}

// getJSON GETs path, expects 200 and JSON, and decodes the body into v.
func (h *harness) getJSON(path string, v any) {
	h.t.Helper()
	code, ctype, body := h.do(http.MethodGet, path, nil)
	if code != http.StatusOK || ctype != "application/json" {
		h.t.Fatalf("GET %s = %d %q %s, want 200 JSON", path, code, ctype, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		h.t.Fatalf("GET %s: %v in %s", path, err, body)
	}
}

// openSessions opens n real sessions (echo backend, real clock) in the
// harness's registry and returns once they are registered. The clients are
// closed at cleanup, before the drain is forced.
func (h *harness) openSessions(n int) {
	h.t.Helper()
	h.wsOnce.Do(func() {
		// Through the gateway's own admission path.
		h.wsURL = sessiontest.Serve(h.t, &session.Acceptor{
			Registry: h.sessions,
			Options: session.Options{
				Config: session.Config{
					MaxMessageBytes: 64 << 10, InboundRate: 100, InboundBurst: 100, OutboundQueue: 64,
					IdleTimeout: time.Hour, MaxDuration: time.Hour, WriteTimeout: 5 * time.Second, SampleRate: 24000,
				},
				Clock: clock.RealClock{}, Backend: echo.New(clock.RealClock{}), Metrics: h.metrics, Log: logr.Discard(),
			},
		})
	})
	for range n {
		// The backend greets only registered sessions.
		sessiontest.ReadUntil(h.t, sessiontest.Dial(h.t, h.wsURL, "", nil), "session.created")
	}
}
