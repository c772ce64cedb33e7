//go:build e2e

// Package e2e drives a rollout of a VoiceGateway on a real cluster (the one
// hack/cluster-up starts; hack/e2e.sh runs this test) while sessions are held
// open through the gateway's Service, and asserts what a caller and an
// operator would notice; scaling_test.go then scales it in and autoscales it
// on its sessions. It needs the e2e build tag, so `go test ./...` never runs
// it.
//
// Environment: KUBECONFIG; E2E_KUBECTL (kubectl binary, default kubectl);
// E2E_NAMESPACE (default "default"); E2E_VGW (default "demo"); E2E_API_KEY;
// E2E_ROLLOUT_IMAGE (the image the rollout switches to); E2E_SESSIONS
// (default 40); E2E_OUT (a folder for the captured watch output and the
// report, default a temporary one).
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/voicegateway/voicegateway/internal/testkit"
	"github.com/voicegateway/voicegateway/internal/voiceclient"
	"github.com/voicegateway/voicegateway/server/admin/adminapi"
)

func env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

var (
	kubectlBin = env("E2E_KUBECTL", "kubectl")
	namespace  = env("E2E_NAMESPACE", "default")
	vgwName    = env("E2E_VGW", "demo")
)

func kubectl(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, kubectlBin, append([]string{"-n", namespace}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

// ---- the sessions ----

const (
	sampleRate  = 24000
	commitEvery = 25 // frames per turn: 0.5 s
)

type counters struct {
	mu             sync.Mutex
	ends           map[string]int // how connections ended, by kind
	errorsByCode   map[string]int
	notices        int // gateway.draining received
	moves          int // connections replaced after a notice
	dialFailures   int
	maxGap         time.Duration // longest silence between audio chunks of one session
	maxGapRollout  time.Duration // the same, counted only during the rollout
	maxGapSteady   time.Duration // the same, before the rollout (the echo's own rhythm)
	maxReconnect   time.Duration // notice (after its reconnect_after_ms) to the new session's session.created
	reconnectTimes []time.Duration
	rolled         bool           // the rollout has begun
	abnormal       []string       // how the first abnormal ends happened
	maxGapWhere    string         // where the longest gap of the rollout fell
	chunksNotified int            // audio chunks received on a session after its notice, before the move
	chunksLeaving  int            // audio chunks received on a session after the move, before its close
	tokenConnects  int            // sessions opened with a client token minted through the Service
	unauthorized   int            // 401s, on a mint or on a connect with a fresh token
	tokenKeys      map[string]int // client tokens minted, by signing key id
	resumed        int            // moves whose new session said gateway.resumed
	resumeFresh    int            // moves that presented a handle and got a fresh session
	noHandle       int            // notices without a resume handle
	turnsContinued int            // moved sessions whose first response continued the echo's turn counter
	turnsRestarted int            // moved sessions whose first response started it again
}

func (c *counters) end(kind string) {
	c.mu.Lock()
	c.ends[kind]++
	c.mu.Unlock()
}

// refused counts a mint or connect the gateway refused with 401.
func (c *counters) refused(err error) {
	var refused *voiceclient.RefusedError
	if errors.As(err, &refused) && refused.Status == http.StatusUnauthorized {
		c.mu.Lock()
		c.unauthorized++
		c.mu.Unlock()
	}
}

// sessionConn is one session of a caller, with what the counters need to
// know about it.
type sessionConn struct {
	*voiceclient.Conn
	notified atomic.Bool // gateway.draining came on this session
	isNew    atomic.Bool // opened by a move
	leaving  atomic.Bool // replaced by a new session, not yet closed
	// turnsBefore is the last response number the previous session showed
	// when its gateway.draining came (the echo's turn counter, as the
	// notice's resume handle carries it); firstResponse is set by this
	// session's first response.created.
	turnsBefore int
	// turnsAtNotice is this session's last response number when its
	// gateway.draining came.
	turnsAtNotice atomic.Int64
	firstResponse atomic.Bool
	lastResponse  atomic.Int64
	resumed       atomic.Bool
}

type caller struct {
	// url is the sessions URL through the Service; mintURL the Service's
	// mint endpoint, where each connect first gets a client token with the
	// API key, as a browser app's backend does.
	url, mintURL, apiKey string
	stats                *counters
	rolling              *atomic.Bool
	lastAudio            atomic.Int64 // unix nanos of the last echoed chunk, any connection
	movedAt              atomic.Int64 // unix nanos of the last switch to a new session
	// podURL and podMintURL, when set, are where the first session opens:
	// one pod, by its IP (scaling_test.go); moves go through the Service.
	podURL, podMintURL string
	connected          atomic.Bool // a session was opened
}

func (c *caller) dial(ctx context.Context, resume string, turnsBefore int) (*sessionConn, error) {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	url, mintURL := c.url, c.mintURL
	if c.podURL != "" && !c.connected.Load() {
		url, mintURL = c.podURL, c.podMintURL
	}
	token, err := mintToken(dctx, mintURL, c.apiKey, 60, c.stats)
	if err != nil {
		return nil, err
	}
	sc := &sessionConn{turnsBefore: turnsBefore}
	// The session is closed by the caller's Call, not with ctx: a read cut
	// by a context would tear it down without a close handshake.
	conn, err := voiceclient.Open(dctx, voiceclient.Options{
		URL: url, Token: token, Binary: true, SampleRate: sampleRate, Resume: resume,
		OnAudio: func(a voiceclient.Audio) { c.onAudio(sc, a.At) },
		OnEvent: func(ev voiceclient.Event) { c.onEvent(sc, ev) },
		OnEnd:   func(e voiceclient.End) { c.onEnd(sc, e) },
	})
	if err != nil {
		c.stats.refused(err)
		return nil, err
	}
	c.stats.mu.Lock()
	c.stats.tokenConnects++
	c.stats.mu.Unlock()
	c.connected.Store(true)
	sc.Conn = conn
	return sc, nil
}

// mintToken gets a client token from the gateway's mint endpoint through
// the Service, counting refusals for want of authentication and the
// signing key of what it got.
func mintToken(ctx context.Context, mintURL, apiKey string, ttlSeconds int, stats *counters) (string, error) {
	token, err := voiceclient.MintToken(ctx, voiceclient.MintOptions{
		URL: mintURL, APIKey: apiKey, TTL: time.Duration(ttlSeconds) * time.Second, HTTPClient: mintClient,
	})
	if err != nil {
		stats.refused(err)
		return "", err
	}
	stats.mu.Lock()
	stats.tokenKeys[signingKeyID(token)]++
	stats.mu.Unlock()
	return token, nil
}

// mintClient opens a connection per request, so that kube-proxy spreads
// the mints over the pods as it spreads the sessions.
var mintClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// signingKeyID is the key id a client token names: ek_vgw_<key id>.<...>
// (vgw_ct_<key id>.<...> from earlier releases).
func signingKeyID(token string) string {
	token = strings.TrimPrefix(strings.TrimPrefix(token, "ek_vgw_"), "vgw_ct_")
	id, _, _ := strings.Cut(token, ".")
	return id
}

// onEnd counts how a session ended; one that ended before session.created
// counts as a failed dial instead.
func (c *caller) onEnd(sc *sessionConn, e voiceclient.End) {
	switch {
	case !e.Ready:
	case e.ByClient:
		c.stats.end("client close")
	case e.Code == -1:
		c.stats.end("abnormal (1006 or reset)")
		c.stats.mu.Lock()
		if len(c.stats.abnormal) < 5 {
			c.stats.abnormal = append(c.stats.abnormal, fmt.Sprintf("%s (%s after the move, notified %v)",
				e.Err, time.Since(time.Unix(0, c.movedAt.Load())).Round(time.Millisecond), sc.notified.Load()))
		}
		c.stats.mu.Unlock()
	default:
		c.stats.end("server close " + strconv.Itoa(int(e.Code)))
	}
}

// onAudio follows the silences between audio chunks of the caller, across
// its sessions.
func (c *caller) onAudio(sc *sessionConn, now time.Time) {
	switch {
	case sc.leaving.Load():
		c.stats.mu.Lock()
		c.stats.chunksLeaving++
		c.stats.mu.Unlock()
	case sc.notified.Load():
		c.stats.mu.Lock()
		c.stats.chunksNotified++
		c.stats.mu.Unlock()
	}
	prev := c.lastAudio.Swap(now.UnixNano())
	if prev == 0 {
		return
	}
	gap := now.Sub(time.Unix(0, prev))
	c.stats.mu.Lock()
	defer c.stats.mu.Unlock()
	if gap > c.stats.maxGap {
		c.stats.maxGap = gap
	}
	if c.rolling.Load() && gap > c.stats.maxGapRollout {
		c.stats.maxGapRollout = gap
		c.stats.maxGapWhere = fmt.Sprintf("ended %s after the caller's last switch to a new session; on the new session: %v",
			now.Sub(time.Unix(0, c.movedAt.Load())).Round(time.Millisecond), sc.isNew.Load())
	}
	if !c.rolling.Load() && !c.stats.rolled && gap > c.stats.maxGapSteady {
		c.stats.maxGapSteady = gap
	}
}

// onEvent counts drain notices and error codes.
func (c *caller) onEvent(sc *sessionConn, ev voiceclient.Event) {
	switch {
	case ev.Draining != nil:
		if !sc.notified.Load() {
			sc.turnsAtNotice.Store(sc.lastResponse.Load())
		}
		sc.notified.Store(true)
		c.stats.mu.Lock()
		c.stats.notices++
		if ev.Draining.Resume == "" {
			c.stats.noHandle++
		}
		c.stats.mu.Unlock()
	case ev.Resumed != nil:
		sc.resumed.Store(true)
		c.stats.mu.Lock()
		c.stats.resumed++
		c.stats.mu.Unlock()
	case ev.ResponseNumber > 0:
		sc.lastResponse.Store(int64(ev.ResponseNumber))
		if sc.isNew.Load() && sc.firstResponse.CompareAndSwap(false, true) {
			c.stats.mu.Lock()
			if sc.turnsBefore > 0 && ev.ResponseNumber > sc.turnsBefore {
				c.stats.turnsContinued++
			} else {
				c.stats.turnsRestarted++
			}
			c.stats.mu.Unlock()
		}
	case ev.Error != nil:
		c.stats.mu.Lock()
		c.stats.errorsByCode[ev.Error.Code]++
		if strings.HasPrefix(ev.Error.Code, "resume_") {
			c.stats.resumeFresh++
		}
		c.stats.mu.Unlock()
	}
}

// run holds one session until ctx ends: audio every 20 ms, a commit every
// 25 frames. On gateway.draining it keeps sending on the old session for
// reconnect_after_ms (at most 2 s), then opens a new session through the
// Service and moves the call to it make before break: the turn in progress
// is committed on the old session, audio goes to the new one, and the old
// one is closed with 1000 once the new one echoes (voiceclient.Call.Move).
func (c *caller) run(ctx context.Context, ready chan<- struct{}) {
	var sc *sessionConn
	for sc == nil {
		var err error
		if sc, err = c.dial(ctx, "", 0); err != nil {
			c.stats.mu.Lock()
			c.stats.dialFailures++
			c.stats.mu.Unlock()
			if ctx.Err() != nil {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	ready <- struct{}{}
	// The turn in progress ends on the old session, whose echo plays it
	// after the previous turn's: the old session's audio runs until one turn
	// from the move. A full turn on the new session is committed just then,
	// so its echo takes over without a pause.
	call := voiceclient.NewCall(voiceclient.CallOptions{
		SampleRate: sampleRate, CommitEvery: commitEvery, WriteTimeout: time.Second, MoveTimeout: 2 * time.Second,
	})
	defer call.Close() // hangs up with 1000, the session being left too
	call.Start(ctx, sc.Conn)
	var (
		notice   = sc.Draining()
		moveAt   <-chan time.Time
		notified time.Time
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-sc.Done():
			// Ended without a notice: reconnect all the same, so that the
			// failure is counted once and the run goes on.
			next := c.redial(ctx, "", 0)
			if next == nil {
				return
			}
			sc, notice = next, next.Draining()
			call.Start(ctx, sc.Conn)
		case <-notice:
			notice = nil
			if moveAt != nil {
				continue
			}
			after := min(sc.Notice().ReconnectAfter, 2*time.Second)
			notified = time.Now().Add(after)
			moveAt = time.After(after)
		case <-moveAt:
			moveAt = nil
			// The new session presents the notice's resume handle: the
			// conversation (for the echo, its id and turn counter) goes on.
			next := c.redial(ctx, sc.Notice().Resume, int(sc.turnsAtNotice.Load()))
			if next == nil {
				continue
			}

			took := time.Since(notified)
			c.stats.mu.Lock()
			c.stats.moves++
			c.stats.reconnectTimes = append(c.stats.reconnectTimes, took)
			if took > c.stats.maxReconnect {
				c.stats.maxReconnect = took
			}
			c.stats.mu.Unlock()
			next.isNew.Store(true)
			sc.leaving.Store(true)
			c.movedAt.Store(time.Now().UnixNano())
			if err := call.Move(ctx, next.Conn); err != nil {
				next.Close()
				return
			}
			sc, notice = next, next.Draining()
		}
	}
}

func (c *caller) redial(ctx context.Context, resume string, turnsBefore int) *sessionConn {
	for attempt := 0; ctx.Err() == nil; attempt++ {
		sc, err := c.dial(ctx, resume, turnsBefore)
		if err == nil {
			return sc
		}
		c.stats.mu.Lock()
		c.stats.dialFailures++
		c.stats.mu.Unlock()
		if !sleepCtx(ctx, time.Duration(50*(attempt+1))*time.Millisecond) {
			return nil
		}
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// ---- the cluster's side ----

type podInfo struct {
	Metadata struct {
		Name                       string     `json:"name"`
		UID                        string     `json:"uid"`
		DeletionTimestamp          *time.Time `json:"deletionTimestamp"`
		DeletionGracePeriodSeconds *int64     `json:"deletionGracePeriodSeconds"`
	} `json:"metadata"`
	Spec struct {
		TerminationGracePeriodSeconds *int64 `json:"terminationGracePeriodSeconds"`
		Containers                    []struct {
			Image string `json:"image"`
		} `json:"containers"`
	} `json:"spec"`
	Status struct {
		PodIP             string `json:"podIP"`
		ContainerStatuses []struct {
			Ready        bool `json:"ready"`
			RestartCount int  `json:"restartCount"`
			State        struct {
				Terminated *struct {
					ExitCode   int       `json:"exitCode"`
					Reason     string    `json:"reason"`
					FinishedAt time.Time `json:"finishedAt"`
				} `json:"terminated"`
			} `json:"state"`
		} `json:"containerStatuses"`
	} `json:"status"`
}

// podStatus reads a pod's admin status, as the operator does.
func podStatus(ctx context.Context, ip string) (adminapi.Status, error) {
	admin, err := adminapi.NewClient(net.JoinHostPort(ip, "9090"), adminapi.ClientOptions{})
	if err != nil {
		return adminapi.Status{}, err
	}
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return admin.Status(rctx)
}

// podMetric reads one metric of a pod's /metrics (the first sample).
func podMetric(ctx context.Context, ip, name string) (float64, error) {
	admin, err := adminapi.NewClient(net.JoinHostPort(ip, "9090"), adminapi.ClientOptions{})
	if err != nil {
		return 0, err
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	text, err := admin.Metrics(rctx)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(text), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("no %s in /metrics", name)
}

func listPods(ctx context.Context) ([]podInfo, error) {
	out, err := kubectl(ctx, "get", "pods", "-l", "app.kubernetes.io/instance="+vgwName, "-o", "json")
	if err != nil {
		return nil, err
	}
	var list struct {
		Items []podInfo `json:"items"`
	}
	err = json.Unmarshal(out, &list)
	return list.Items, err
}

type vgwStatus struct {
	Ready            string `json:"ready"`
	ReadyReplicas    int    `json:"readyReplicas"`
	Sessions         int    `json:"sessions"`
	DrainingSessions int    `json:"drainingSessions"`
}

func getVGW(ctx context.Context) (vgwStatus, error) {
	var v struct {
		Status vgwStatus `json:"status"`
	}
	out, err := kubectl(ctx, "get", "vgw", vgwName, "-o", "json")
	if err != nil {
		return v.Status, err
	}
	err = json.Unmarshal(out, &v)
	return v.Status, err
}

// until adapts a condition that also says what it saw to
// testkit.Eventually, so that a timeout reports the last state.
func until(what string, cond func() (bool, string)) func() error {
	return func() error {
		if ok, state := cond(); !ok {
			return fmt.Errorf("waiting for %s; last: %s", what, state)
		}
		return nil
	}
}

// oldPodWatch follows one old pod: its admin status until it stops
// answering, and its container's termination from a pod watch.
type oldPodWatch struct {
	name, ip    string
	maxSessions int
	maxNotified int
	sawDraining bool
}

func TestRollout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	out := env("E2E_OUT", t.TempDir())
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	apiKey := os.Getenv("E2E_API_KEY")
	rolloutImage := os.Getenv("E2E_ROLLOUT_IMAGE")
	if apiKey == "" || rolloutImage == "" {
		t.Fatal("E2E_API_KEY and E2E_ROLLOUT_IMAGE must be set (hack/e2e.sh sets them)")
	}
	sessions, _ := strconv.Atoi(env("E2E_SESSIONS", "40"))
	phase := map[string]float64{}
	mark := time.Now()
	lap := func(name string) {
		phase[name] = time.Since(mark).Seconds()
		t.Logf("phase %s: %.1fs", name, phase[name])
		mark = time.Now()
	}

	// 1. Two gateway pods Ready, READY 2/2.
	testkit.Eventually(t, 3*time.Minute, until("VoiceGateway READY 2/2", func() (bool, string) {
		st, err := getVGW(ctx)
		return err == nil && st.Ready == "2/2", fmt.Sprintf("%+v %v", st, err)
	}))
	oldPods, err := listPods(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(oldPods) != 2 {
		t.Fatalf("want 2 gateway pods, got %d", len(oldPods))
	}
	// Both pods in the Service's EndpointSlice as ready, and a moment for
	// kube-proxy to program them, so that the sessions spread over both.
	testkit.Eventually(t, time.Minute, until("2 ready endpoints of the Service", func() (bool, string) {
		out, err := kubectl(ctx, "get", "endpointslices", "-l", "kubernetes.io/service-name="+vgwName,
			"-o", "jsonpath={.items[*].endpoints[?(@.conditions.ready==true)].addresses[0]}")
		return err == nil && len(strings.Fields(string(out))) == 2, string(out)
	}))
	time.Sleep(2 * time.Second)
	svcIP, err := kubectl(ctx, "get", "service", vgwName, "-o", "jsonpath={.spec.clusterIP}:{.spec.ports[0].port}")
	if err != nil {
		t.Fatal(err)
	}
	url := "ws://" + string(svcIP) + "/v1/realtime?audio=binary"
	mintURL := "http://" + string(svcIP) + "/v1/client_tokens"
	t.Logf("sessions through the Service: %s, each with a client token from %s", url, mintURL)

	// 2. Sessions held open through the Service.
	stats := &counters{ends: map[string]int{}, errorsByCode: map[string]int{}, tokenKeys: map[string]int{}}
	var rolling atomic.Bool
	sctx, stopSessions := context.WithCancel(ctx)
	var wg sync.WaitGroup
	ready := make(chan struct{}, sessions)
	for i := 0; i < sessions; i++ {
		c := &caller{url: url, mintURL: mintURL, apiKey: apiKey, stats: stats, rolling: &rolling}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.run(sctx, ready)
		}()
		time.Sleep(10 * time.Millisecond)
	}
	defer func() {
		stopSessions()
		wg.Wait()
	}()
	for i := 0; i < sessions; i++ {
		select {
		case <-ready:
		case <-time.After(30 * time.Second):
			t.Fatalf("only %d of %d sessions connected", i, sessions)
		}
	}
	testkit.Eventually(t, time.Minute, until("the sessions in the VoiceGateway's status", func() (bool, string) {
		st, err := getVGW(ctx)
		return err == nil && st.Sessions == sessions && st.Ready == "2/2", fmt.Sprintf("%+v %v", st, err)
	}))
	vgwLine, _ := kubectl(ctx, "get", "vgw", vgwName)
	t.Logf("before the rollout:\n%s", vgwLine)
	stats.mu.Lock()
	t.Logf("token-authenticated connects through the Service: %d succeeded, %d refused with 401 (keys %v)",
		stats.tokenConnects, stats.unauthorized, stats.tokenKeys)
	if stats.unauthorized != 0 || stats.tokenConnects < sessions {
		t.Errorf("%d of the first %d token connects refused with 401; want 0", stats.unauthorized, sessions)
	}
	stats.mu.Unlock()
	lap("sessions")

	// 3. The fleet's client-token keys rotated while the calls go on: no
	// pod restarts, no token refused, new tokens signed with the new key.
	rotation := rotateKeys(ctx, t, url, mintURL, apiKey, oldPods, stats)
	lap("key rotation")
	time.Sleep(3 * time.Second) // steady audio before the rollout

	// 4. Follow the old pods and capture the watches.
	watches := map[string]*oldPodWatch{}
	for _, p := range oldPods {
		st, err := podStatus(ctx, p.Status.PodIP)
		if err != nil {
			t.Fatalf("admin status of %s: %v", p.Metadata.Name, err)
		}
		watches[p.Metadata.Name] = &oldPodWatch{name: p.Metadata.Name, ip: p.Status.PodIP, maxSessions: st.Sessions}
		t.Logf("old pod %s holds %d sessions", p.Metadata.Name, st.Sessions)
		// The operator hands the container's memory limit (the CRD's
		// default 512Mi) to the server through the downward API; half of
		// it is the pod's memory budget.
		if budget, err := podMetric(ctx, p.Status.PodIP, "voicegateway_memory_budget_bytes"); err != nil || budget != 256<<20 {
			t.Errorf("memory budget of %s = %v, %v; want 256 MiB, half of its 512Mi limit", p.Metadata.Name, budget, err)
		}
	}
	wctx, stopWatches := context.WithCancel(ctx)
	defer stopWatches()
	vgwWatchFile := filepath.Join(out, "kubectl-get-vgw-w.txt")
	vgwWatch := startCapture(wctx, t, vgwWatchFile, "get", "vgw", vgwName, "-w")
	podWatch := startCapture(wctx, t, filepath.Join(out, "kubectl-get-pods-w.json"),
		"get", "pods", "-l", "app.kubernetes.io/instance="+vgwName, "-w", "-o", "json")
	var pollWG sync.WaitGroup
	var pollMu sync.Mutex
	for _, w := range watches {
		pollWG.Add(1)
		go func(w *oldPodWatch) {
			defer pollWG.Done()
			fails := 0
			for wctx.Err() == nil && fails < 10 {
				st, err := podStatus(wctx, w.ip)
				if err != nil {
					fails++
				} else {
					fails = 0
					pollMu.Lock()
					if st.Draining {
						w.sawDraining = true
					}
					if st.Notified > w.maxNotified {
						w.maxNotified = st.Notified
					}
					if !st.Draining && st.Sessions > w.maxSessions {
						w.maxSessions = st.Sessions
					}
					pollMu.Unlock()
				}
				time.Sleep(100 * time.Millisecond)
			}
		}(w)
	}

	// 5. The rollout: a new image tag.
	stats.mu.Lock()
	stats.rolled = true
	stats.mu.Unlock()
	rolling.Store(true)
	rolloutStart := time.Now()
	patch := fmt.Sprintf(`{"spec":{"image":%q}}`, rolloutImage)
	if _, err := kubectl(ctx, "patch", "vgw", vgwName, "--type", "merge", "-p", patch); err != nil {
		t.Fatal(err)
	}
	oldUID := map[string]bool{}
	for _, p := range oldPods {
		oldUID[p.Metadata.UID] = true
	}
	testkit.Eventually(t, 4*time.Minute, until("the rollout: 2 new pods Ready, the old ones gone", func() (bool, string) {
		pods, err := listPods(ctx)
		if err != nil {
			return false, err.Error()
		}
		newReady, old := 0, 0
		for _, p := range pods {
			if oldUID[p.Metadata.UID] {
				old++
				continue
			}
			if len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].Ready && p.Spec.Containers[0].Image == rolloutImage {
				newReady++
			}
		}
		return old == 0 && newReady == 2, fmt.Sprintf("%d old pods left, %d new Ready", old, newReady)
	}))
	rolloutTook := time.Since(rolloutStart)
	lap("rollout")
	// The sessions settle on the new pods.
	testkit.Eventually(t, time.Minute, until("every session on the new pods", func() (bool, string) {
		st, err := getVGW(ctx)
		return err == nil && st.Sessions == sessions && st.DrainingSessions == 0 && st.Ready == "2/2", fmt.Sprintf("%+v %v", st, err)
	}))
	rolling.Store(false)
	time.Sleep(2 * time.Second)
	vgwLine, _ = kubectl(ctx, "get", "vgw", vgwName)
	t.Logf("after the rollout:\n%s", vgwLine)
	stopWatches()
	pollWG.Wait()
	<-vgwWatch
	<-podWatch
	stopSessions()
	wg.Wait()
	lap("settle")

	// 6. Assertions.
	// Each old pod: its sessions were notified, it exited 0 within its grace.
	exits := oldPodExits(t, filepath.Join(out, "kubectl-get-pods-w.json"), oldUID)
	report := map[string]any{}
	var podLines []string
	for _, p := range oldPods {
		w := watches[p.Metadata.Name]
		e, ok := exits[p.Metadata.UID]
		line := fmt.Sprintf("%s: %d sessions, %d notified (gateway.draining), draining seen %v", w.name, w.maxSessions, w.maxNotified, w.sawDraining)
		if ok {
			line += fmt.Sprintf(", exit %d (%s) %.1fs after the delete, grace %ds", e.code, e.reason, e.afterDelete.Seconds(), e.grace)
		}
		podLines = append(podLines, line)
		t.Log(line)
		if !w.sawDraining {
			t.Errorf("old pod %s: its admin status never showed draining", w.name)
		}
		if w.maxNotified < w.maxSessions || w.maxSessions == 0 {
			t.Errorf("old pod %s: %d sessions but %d notified with gateway.draining", w.name, w.maxSessions, w.maxNotified)
		}
		if !ok {
			t.Errorf("old pod %s: no terminated container state seen in the pod watch", w.name)
			continue
		}
		if e.code != 0 {
			t.Errorf("old pod %s: exit code %d (%s), want 0", w.name, e.code, e.reason)
		}
		if e.afterDelete > time.Duration(e.grace)*time.Second {
			t.Errorf("old pod %s: exited %.1fs after the delete, past its %ds grace period", w.name, e.afterDelete.Seconds(), e.grace)
		}
	}
	stats.mu.Lock()
	defer stats.mu.Unlock()
	sort.Slice(stats.reconnectTimes, func(i, j int) bool { return stats.reconnectTimes[i] < stats.reconnectTimes[j] })
	p50 := time.Duration(0)
	if n := len(stats.reconnectTimes); n > 0 {
		p50 = stats.reconnectTimes[n/2]
	}
	t.Logf("clients: %d sessions, %d gateway.draining notices, %d moves, %d failed dials; reconnect p50 %s max %s; max audio gap %s (before the rollout %s, during it %s); ends %v; errors %v",
		sessions, stats.notices, stats.moves, stats.dialFailures, p50.Round(time.Millisecond), stats.maxReconnect.Round(time.Millisecond),
		stats.maxGap.Round(time.Millisecond), stats.maxGapSteady.Round(time.Millisecond), stats.maxGapRollout.Round(time.Millisecond), stats.ends, stats.errorsByCode)
	t.Logf("the longest gap of the rollout %s; abnormal ends: %q; audio chunks on old sessions after their notice %d, after the move %d",
		stats.maxGapWhere, stats.abnormal, stats.chunksNotified, stats.chunksLeaving)
	t.Logf("client tokens: %d token-authenticated connects through the Service, %d refused with 401; minted by signing key: %v",
		stats.tokenConnects, stats.unauthorized, stats.tokenKeys)
	if stats.unauthorized != 0 {
		t.Errorf("%d mints or token connects refused with 401 over the whole run; want 0", stats.unauthorized)
	}
	t.Logf("resume: %d of %d moves resumed, %d fresh, %d notices without a handle; echo turn counter continued on %d moved sessions, restarted on %d",
		stats.resumed, stats.moves, stats.resumeFresh, stats.noHandle, stats.turnsContinued, stats.turnsRestarted)
	if stats.resumed != stats.moves || stats.resumeFresh != 0 || stats.noHandle != 0 {
		t.Errorf("%d of %d moves resumed (%d fresh, %d notices without a handle); want every move resumed", stats.resumed, stats.moves, stats.resumeFresh, stats.noHandle)
	}
	if stats.turnsRestarted != 0 {
		t.Errorf("the echo's turn counter started again on %d moved sessions (continued on %d)", stats.turnsRestarted, stats.turnsContinued)
	}
	for kind, n := range stats.ends {
		if kind != "client close" {
			t.Errorf("%d connections ended with %s; want only client closes (1000 after a move or at the end)", n, kind)
		}
	}
	if stats.notices < sessions {
		t.Errorf("%d gateway.draining notices for %d sessions, each of which was on an old pod", stats.notices, sessions)
	}
	if stats.moves < sessions {
		t.Errorf("%d moves for %d sessions", stats.moves, sessions)
	}
	// A move is make before break and keeps the turns' rhythm, so the
	// longest silence during the rollout may exceed the steady state's only
	// by a reconnect, with 250 ms of slack for a loaded 2-core machine.
	if limit := stats.maxGapSteady + stats.maxReconnect + 250*time.Millisecond; stats.maxGapRollout > limit {
		t.Errorf("longest audio gap during the rollout %s, over %s (steady state %s + longest reconnect %s + 250ms)",
			stats.maxGapRollout, limit, stats.maxGapSteady, stats.maxReconnect)
	}
	// The captured watch shows the draining sessions counting down.
	watchText, _ := os.ReadFile(vgwWatchFile)
	drainingSeen := false
	for _, l := range strings.Split(string(watchText), "\n") {
		f := strings.Fields(l)
		if len(f) >= 4 && f[0] == vgwName && f[3] != "0" {
			drainingSeen = true
		}
	}
	if !drainingSeen {
		t.Errorf("kubectl get vgw -w never showed draining sessions:\n%s", watchText)
	}
	t.Logf("kubectl get vgw %s -w during the rollout:\n%s", vgwName, watchText)
	// The preStop hook (`voice-server drain`, an exec with the admin
	// token) ran on every old pod: the kubelet records a failed one.
	hookEvents, err := kubectl(ctx, "get", "events", "--field-selector", "reason=FailedPreStopHook", "-o", "name")
	if err != nil {
		t.Errorf("listing FailedPreStopHook events: %v", err)
	} else if strings.TrimSpace(string(hookEvents)) != "" {
		t.Errorf("the preStop hook failed: %s", hookEvents)
	}

	report["sessions"] = sessions
	report["notices"] = stats.notices
	report["moves"] = stats.moves
	report["dial_failures"] = stats.dialFailures
	report["ends"] = stats.ends
	report["errors"] = stats.errorsByCode
	report["reconnect_p50_ms"] = p50.Milliseconds()
	report["reconnect_max_ms"] = stats.maxReconnect.Milliseconds()
	report["max_audio_gap_ms"] = stats.maxGap.Milliseconds()
	report["max_audio_gap_rollout_ms"] = stats.maxGapRollout.Milliseconds()
	report["max_audio_gap_before_rollout_ms"] = stats.maxGapSteady.Milliseconds()
	report["rollout_seconds"] = rolloutTook.Seconds()
	report["old_pods"] = podLines
	report["phases_seconds"] = phase
	report["token_connects"] = stats.tokenConnects
	report["token_unauthorized"] = stats.unauthorized
	report["tokens_by_signing_key"] = stats.tokenKeys
	report["key_rotation"] = rotation
	b, _ := json.MarshalIndent(report, "", "  ")
	if err := os.WriteFile(filepath.Join(out, "rollout-report.json"), b, 0o644); err != nil {
		t.Error(err)
	}
}

// tokenKeysOf reads the signing keys of the VoiceGateway's fleet Secret
// (ids and times only).
func tokenKeysOf(ctx context.Context) ([]fleetKey, error) {
	out, err := kubectl(ctx, "get", "secret", vgwName+"-fleet", "-o", `jsonpath={.data.token-keys\.json}`)
	if err != nil {
		return nil, err
	}
	raw, err := base64.StdEncoding.DecodeString(string(out))
	if err != nil {
		return nil, err
	}
	var keys struct {
		Keys []fleetKey `json:"keys"`
	}
	err = json.Unmarshal(raw, &keys)
	return keys.Keys, err
}

type fleetKey struct {
	ID          string     `json:"id"`
	SignFrom    *time.Time `json:"sign_from"`
	VerifyUntil *time.Time `json:"verify_until"`
}

// rotateKeys asks the operator for a new signing key (the rotate-keys
// annotation) and keeps minting and connecting through the Service, one
// probe every 200 ms, until tokens carry the new key: every probe must
// succeed, tokens minted before the rotation must still work after it, and
// no pod may restart. It returns the figures for the report.
func rotateKeys(ctx context.Context, t *testing.T, url, mintURL, apiKey string, pods []podInfo, stats *counters) map[string]any {
	t.Helper()
	before, err := tokenKeysOf(ctx)
	if err != nil || len(before) == 0 {
		t.Fatalf("reading the fleet Secret's signing keys: %v", err)
	}
	oldID := before[0].ID
	var early []string
	for range 4 {
		token, err := mintToken(ctx, mintURL, apiKey, 600, stats)
		if err != nil {
			t.Fatal(err)
		}
		early = append(early, token)
	}
	start := time.Now()
	if _, err := kubectl(ctx, "annotate", "vgw", vgwName, "--overwrite",
		fmt.Sprintf("voicegateway.dev/rotate-keys=e2e-%d", start.Unix())); err != nil {
		t.Fatal(err)
	}
	var newKey fleetKey
	testkit.Eventually(t, time.Minute, until("a new signing key in the fleet Secret", func() (bool, string) {
		keys, err := tokenKeysOf(ctx)
		if err != nil {
			return false, err.Error()
		}
		for _, k := range keys {
			if k.ID != oldID {
				newKey = k
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d keys", len(keys))
	}))
	t.Logf("rotation requested; the operator wrote key %s, signing from %v (%s after the request)",
		newKey.ID, newKey.SignFrom, time.Since(start).Round(time.Millisecond))

	probes, failed, newInARow := 0, 0, 0
	byKey := map[string]int{}
	probe := func() (string, error) {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		token, err := mintToken(pctx, mintURL, apiKey, 60, stats)
		if err != nil {
			return "", err
		}
		return signingKeyID(token), connectOnce(pctx, url, token, stats)
	}
	deadline := time.Now().Add(4 * time.Minute)
	for newInARow < 10 && time.Now().Before(deadline) {
		kid, err := probe()
		probes++
		if err != nil {
			failed++
			t.Errorf("probe %d during the rotation: %v", probes, err)
		}
		byKey[kid]++
		if kid == newKey.ID {
			newInARow++
		} else {
			newInARow = 0
		}
		time.Sleep(200 * time.Millisecond)
	}
	if newInARow < 10 {
		t.Errorf("tokens never came signed with the new key %s: %v", newKey.ID, byKey)
	}
	switched := time.Since(start)
	earlyOK := 0
	for _, token := range early {
		if err := connectOnce(ctx, url, token, stats); err != nil {
			t.Errorf("a token minted before the rotation fails after it: %v", err)
		} else {
			earlyOK++
		}
	}
	after, err := listPods(ctx)
	if err != nil {
		t.Fatal(err)
	}
	same := map[string]bool{}
	for _, p := range pods {
		same[p.Metadata.UID] = true
	}
	for _, p := range after {
		if !same[p.Metadata.UID] {
			t.Errorf("pod %s appeared during the key rotation: the rotation rolled the pods", p.Metadata.Name)
		}
		for _, cs := range p.Status.ContainerStatuses {
			if cs.RestartCount != 0 {
				t.Errorf("pod %s restarted %d times during the key rotation", p.Metadata.Name, cs.RestartCount)
			}
		}
	}
	t.Logf("key rotation: %d probes through the Service (%d failed) by signing key %v; new key in every token %s after the request; "+
		"%d of %d tokens minted before it still accepted; pods unchanged",
		probes, failed, byKey, switched.Round(time.Second), earlyOK, len(early))
	return map[string]any{
		"old_key": oldID, "new_key": newKey.ID, "probes": probes, "probes_failed": failed, "probes_by_key": byKey,
		"switch_seconds": switched.Seconds(), "early_tokens_accepted": earlyOK, "early_tokens": len(early),
	}
}

// connectOnce opens a session with a client token through the Service,
// waits for session.created and hangs up.
func connectOnce(ctx context.Context, url, token string, stats *counters) error {
	conn, err := voiceclient.Open(ctx, voiceclient.Options{URL: url, Token: token})
	if err != nil {
		stats.refused(err)
		return err
	}
	stats.mu.Lock()
	stats.tokenConnects++
	stats.mu.Unlock()
	return conn.Close()
}

// startCapture runs kubectl with its output into file until ctx ends; the
// channel closes when it has exited.
func startCapture(ctx context.Context, t *testing.T, file string, args ...string) <-chan struct{} {
	t.Helper()
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, kubectlBin, append([]string{"-n", namespace}, args...)...)
	cmd.Stdout = f
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(done)
	}()
	return done
}

type podExit struct {
	code        int
	reason      string
	afterDelete time.Duration // from the delete (deletionTimestamp - grace) to finishedAt
	grace       int64
}

// oldPodExits reads a `kubectl get pods -w -o json` capture (a stream of
// pod objects) for the terminated state of each old pod's container.
func oldPodExits(t *testing.T, file string, old map[string]bool) map[string]podExit {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := json.NewDecoder(bufio.NewReader(f))
	exits := map[string]podExit{}
	deleted := map[string]time.Time{}
	for {
		var p podInfo
		if err := dec.Decode(&p); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Logf("pod watch capture: %v", err)
			}
			break
		}
		if !old[p.Metadata.UID] || p.Metadata.DeletionTimestamp == nil || p.Metadata.DeletionGracePeriodSeconds == nil {
			continue
		}
		// The first deletion seen is the rollout's; the kubelet's final
		// delete (grace 0) moves deletionTimestamp to its own time.
		if _, seen := deleted[p.Metadata.UID]; !seen {
			deleted[p.Metadata.UID] = p.Metadata.DeletionTimestamp.Add(-time.Duration(*p.Metadata.DeletionGracePeriodSeconds) * time.Second)
		}
		for _, cs := range p.Status.ContainerStatuses {
			if term := cs.State.Terminated; term != nil {
				grace := *p.Metadata.DeletionGracePeriodSeconds
				if p.Spec.TerminationGracePeriodSeconds != nil {
					grace = *p.Spec.TerminationGracePeriodSeconds
				}
				exits[p.Metadata.UID] = podExit{code: term.ExitCode, reason: term.Reason, afterDelete: term.FinishedAt.Sub(deleted[p.Metadata.UID]), grace: grace}
			}
		}
	}
	return exits
}
