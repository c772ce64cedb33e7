package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/voicegateway/voicegateway/internal/serviceproxy"
)

// chromiumPath is Debian's Chromium, which .ci/run installs. Tests never
// download a browser.
const chromiumPath = "/usr/bin/chromium"

// The fake microphone plays a steady tone, so that what the page sent and
// what came back can be compared by energy and pitch.
const (
	toneHz        = 440
	toneAmplitude = 0.5
	toneRate      = 48000
	toneSeconds   = 3 // a whole number of cycles: Chromium loops the file without a click
)

// pageStats mirrors window.__vgw, the demo page's counters.
type pageStats struct {
	State             string      `json:"state"`
	SampleRate        int         `json:"sampleRate"`
	DeviceRate        float64     `json:"deviceRate"`
	AudioState        string      `json:"audioState"`
	ChunksCaptured    int         `json:"chunksCaptured"`
	SessionIDs        []string    `json:"sessionIds"`
	DrainingEvents    int         `json:"drainingEvents"`
	Moves             []pageMove  `json:"moves"`
	Errors            []pageError `json:"errors"`
	SamplesSent       int         `json:"samplesSent"`
	SamplesReceived   int         `json:"samplesReceived"`
	RMSSent           float64     `json:"rmsSent"`
	RMSReceived       float64     `json:"rmsReceived"`
	FrequencySent     float64     `json:"frequencySent"`
	FrequencyReceived float64     `json:"frequencyReceived"`
	Transcripts       int         `json:"transcripts"`
	LastTranscript    string      `json:"lastTranscript"`
	MaxReceiveGapMS   int         `json:"maxReceiveGapMs"`
	Underruns         int         `json:"underruns"`
	PlayedSamples     int         `json:"playedSamples"`
	CSPViolations     int         `json:"cspViolations"`
	Resumes           []struct {
		SessionID string `json:"sessionId"`
		Restored  int    `json:"restored"`
		Dropped   int    `json:"dropped"`
	} `json:"resumes"`
	Banner string `json:"banner"`
}

type pageMove struct {
	From            string                           `json:"from"`
	To              string                           `json:"to"`
	Resumed         *struct{ Restored, Dropped int } `json:"resumed"`
	AfterDrainingMS *float64                         `json:"afterDrainingMs"`
}

type pageError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Fatal   bool   `json:"fatal"`
}

// TestBrowserTalksThroughDrain is the demo page in a real headless
// Chromium with a fake microphone, against two real server processes
// behind a loopback proxy that stands in for a Service. The page streams
// the tone over the binary fast path and gets the echo back; then the
// server it uses is sent SIGTERM, the page is told gateway.draining, moves
// to the other server by itself and keeps streaming, and the first server
// exits 0 with no session left for its deadline.
func TestBrowserTalksThroughDrain(t *testing.T) {
	requireChromium(t)
	dir := t.TempDir()
	// Replicas share the fleet Secret, as a VoiceGateway's pods do, so the
	// page's token works on whichever server the proxy picks.
	args := []string{
		"--fleet-secret-dir", newFleetDir(t),
		"--drain-timeout", "27s", "--exit-margin", "3s",
		"--propagation-delay", "1s", "--notify-window", "1s", "--reconnect-after", "500ms",
	}
	first := startProcess(t, args...)
	second := startProcess(t, args...)
	service := startServiceProxy(t, first, second)
	browser := startBrowser(t, writeToneWAV(t, dir))
	ctx, cancel := context.WithTimeout(browser.ctx, 3*time.Minute)
	defer cancel()

	// Without a token the page is refused, and says why with the code.
	browser.startTalking(ctx, service.url()+"/?processing=off")
	st := browser.waitFor(ctx, "a refusal", func(s pageStats) bool { return len(s.Errors) > 0 })
	if e := st.Errors[len(st.Errors)-1]; e.Code != "unauthorized" || !e.Fatal {
		t.Fatalf("refused without a token: errors %+v, want a fatal unauthorized", st.Errors)
	}
	refusedShot := browser.screenshot(ctx, "demo-page-unauthorized.png")

	// With a client secret minted by "the app's backend" the OpenAI way
	// (POST /v1/realtime/client_secrets with its API key), presented by the
	// page in the openai-insecure-api-key subprotocol, it talks.
	token := mintClientSecret(t, first, 600)
	if !strings.HasPrefix(token, "ek_") {
		t.Fatalf("client secret %q… does not start with ek_, which the OpenAI SDKs require in a browser", token[:min(len(token), 8)])
	}
	browser.startTalking(ctx, service.url()+"/?processing=off#token="+token)
	location, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href`))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(location, token) {
		t.Errorf("the token stayed in the address bar: %s", location)
	}
	const rate = 24000
	st = browser.waitFor(ctx, "a second of echo", func(s pageStats) bool { return s.SamplesReceived >= rate })
	if st.SampleRate != rate || len(st.SessionIDs) != 1 {
		t.Fatalf("sample rate %d, sessions %v; want %d and one session", st.SampleRate, st.SessionIDs, rate)
	}
	framesIn, framesOut := first.metric("voicegateway_audio_frames_in_total"), first.metric("voicegateway_audio_frames_out_total")
	if framesIn == 0 || framesOut == 0 {
		t.Fatalf("first server counted %v frames in and %v out, want both > 0", framesIn, framesOut)
	}
	if second.metric("voicegateway_audio_frames_in_total") != 0 {
		t.Fatal("the second server got audio before the first one drained")
	}
	before := st
	t.Logf("before the drain: %.0f frames in, %.0f out on the first server; page sent %d samples, received %d",
		framesIn, framesOut, st.SamplesSent, st.SamplesReceived)

	// SIGTERM to the server in use: the page is told, moves, keeps talking.
	first.Signal(syscall.SIGTERM)
	st = browser.waitFor(ctx, "the move to the second server", func(s pageStats) bool { return len(s.Moves) > 0 })
	moved := st
	// The move presented the notice's resume handle: the page says the
	// conversation was kept.
	st = browser.waitFor(ctx, "the conversation kept", func(s pageStats) bool {
		return len(s.Resumes) > 0 && strings.Contains(s.Banner, "conversation kept")
	})
	keptShot := browser.screenshot(ctx, "demo-page-conversation-kept.png")
	t.Logf("after the move the page shows %q (gateway.resumed %+v)", st.Banner, st.Resumes)
	st = browser.waitFor(ctx, "a second of echo from the second server", func(s pageStats) bool {
		return s.SamplesReceived >= moved.SamplesReceived+rate
	})
	if code := first.WaitExit(45 * time.Second); code != 0 {
		t.Fatalf("first server exit code %d, want 0", code)
	}
	if !strings.Contains(first.Logs(), `"closedAtDeadline":0`) {
		t.Error("the first server closed sessions at its drain deadline; the page should have left on its own")
	}
	secondIn := second.metric("voicegateway_audio_frames_in_total")
	secondOut := second.metric("voicegateway_audio_frames_out_total")
	if secondIn == 0 || secondOut == 0 {
		t.Fatalf("second server counted %v frames in and %v out, want both > 0", secondIn, secondOut)
	}
	if got := second.status().Sessions; got != 1 {
		t.Errorf("second server holds %v sessions, want 1", got)
	}

	shot := browser.screenshot(ctx, "demo-page.png")

	if st.DrainingEvents < 1 {
		t.Errorf("page saw %d gateway.draining events, want ≥ 1", st.DrainingEvents)
	}
	// The conversation went on: the new session continues the old one's id.
	if len(st.SessionIDs) != 2 || st.SessionIDs[0] != st.SessionIDs[1] {
		t.Fatalf("sessions %v, want the same one twice (resumed)", st.SessionIDs)
	}
	if m := st.Moves[0]; m.From != st.SessionIDs[0] || m.To != st.SessionIDs[1] || len(st.Resumes) != 1 || st.Resumes[0].SessionID != m.To {
		t.Errorf("move %+v, resumes %+v, sessions %v", m, st.Resumes, st.SessionIDs)
	}
	if !strings.Contains(first.Logs(), st.SessionIDs[0]) || !strings.Contains(second.Logs(), st.SessionIDs[1]) {
		t.Errorf("session %s should be on the first server and %s on the second", st.SessionIDs[0], st.SessionIDs[1])
	}
	// The page hung up the old session itself, normally, once the new one ran.
	if code := sessionCloseCode(first.Logs(), st.SessionIDs[0]); code != 1000 {
		t.Errorf("old session %s closed with %d, want 1000 from the page", st.SessionIDs[0], code)
	}
	if len(st.Errors) > 0 {
		t.Errorf("errors on the page while talking: %+v", st.Errors)
	}
	if st.CSPViolations != 0 {
		t.Errorf("%d Content-Security-Policy violations", st.CSPViolations)
	}
	if st.Transcripts == 0 {
		t.Error("no transcript shown")
	}
	// What came back is what was sent, and what was sent is the tone:
	// the same energy, the same pitch (a wrong rate conversion shifts it).
	wantRMS := toneAmplitude / math.Sqrt2
	within(t, "RMS sent vs the tone", st.RMSSent, wantRMS, 0.2)
	within(t, "RMS received vs sent", st.RMSReceived, st.RMSSent, 0.2)
	within(t, "pitch sent", st.FrequencySent, toneHz, 0.05)
	within(t, "pitch received", st.FrequencyReceived, toneHz, 0.05)

	afterDraining := -1.0
	if st.Moves[0].AfterDrainingMS != nil {
		afterDraining = *st.Moves[0].AfterDrainingMS
	}
	t.Logf("frames: first server %.0f in / %.0f out, second %.0f in / %.0f out", framesIn, framesOut, secondIn, secondOut)
	t.Logf("page: sent %.2f s (RMS %.4f, %.1f Hz), received %.2f s (RMS %.4f, %.1f Hz); tone RMS %.4f; device rate %.0f Hz",
		float64(st.SamplesSent)/rate, st.RMSSent, st.FrequencySent, float64(st.SamplesReceived)/rate, st.RMSReceived, st.FrequencyReceived, wantRMS, st.DeviceRate)
	t.Logf("move: new session %.0f ms after gateway.draining; longest gap between received audio messages %d ms; received %.2f s before the drain; playback underruns %d; %d transcripts",
		afterDraining, st.MaxReceiveGapMS, float64(before.SamplesReceived)/rate, st.Underruns, st.Transcripts)
	t.Logf("screenshots: %s (talking, after the move), %s (conversation kept), %s (refused without a token)", shot, keptShot, refusedShot)
	browser.stop()
}

// TestBrowserDemoPageWithoutAuth is `make run`: authentication off, the page
// needs no token, and the echo comes back.
func TestBrowserDemoPageWithoutAuth(t *testing.T) {
	requireChromium(t)
	p := startBinary(t, "--insecure-no-auth", "--propagation-delay", "0s")
	browser := startBrowser(t, writeToneWAV(t, t.TempDir()))
	ctx, cancel := context.WithTimeout(browser.ctx, 2*time.Minute)
	defer cancel()
	browser.startTalking(ctx, "http://"+p.public+"/")
	st := browser.waitFor(ctx, "half a second of echo and a transcript", func(s pageStats) bool {
		return s.SamplesReceived >= 12000 && s.Transcripts > 0
	})
	if len(st.Errors) > 0 || st.CSPViolations > 0 {
		t.Errorf("errors %+v, CSP violations %d", st.Errors, st.CSPViolations)
	}
	if !strings.HasPrefix(st.LastTranscript, "(echo of ") {
		t.Errorf("transcript %q, want the echo backend's", st.LastTranscript)
	}
	if p.metric("voicegateway_audio_frames_in_total") == 0 {
		t.Error("server counted no audio frames")
	}
	// Hanging up closes the session with 1000.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#talk"))); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for p.metric(`voicegateway_sessions_closed_total{code="1000"}`) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the session was not closed with 1000 after hanging up")
		}
		time.Sleep(50 * time.Millisecond)
	}
	browser.stop()
	p.Signal(syscall.SIGTERM)
	if code := p.WaitExit(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

// TestBrowserReconnectsAfterCrash: the server in use dies without a word
// (SIGKILL); the page sees its connection drop (1006), reconnects with
// backoff to the same URL, lands on the other server and goes on.
func TestBrowserReconnectsAfterCrash(t *testing.T) {
	requireChromium(t)
	first := startBinary(t, "--insecure-no-auth")
	second := startBinary(t, "--insecure-no-auth")
	service := startServiceProxy(t, first, second)
	browser := startBrowser(t, writeToneWAV(t, t.TempDir()))
	ctx, cancel := context.WithTimeout(browser.ctx, 2*time.Minute)
	defer cancel()
	browser.startTalking(ctx, service.url()+"/?processing=off")
	st := browser.waitFor(ctx, "half a second of echo", func(s pageStats) bool { return s.SamplesReceived >= 12000 })
	first.Signal(syscall.SIGKILL)
	first.WaitExit(30 * time.Second)
	received := st.SamplesReceived
	st = browser.waitFor(ctx, "half a second of echo after reconnecting", func(s pageStats) bool {
		return len(s.SessionIDs) == 2 && s.SamplesReceived >= received+12000
	})
	if st.State != "open" || len(st.Moves) != 1 || st.Moves[0].AfterDrainingMS != nil {
		t.Errorf("state %s, moves %+v; want open after one reconnect without a drain notice", st.State, st.Moves)
	}
	if !strings.Contains(second.Logs(), st.SessionIDs[1]) {
		t.Errorf("session %s is not on the second server", st.SessionIDs[1])
	}
	for _, e := range st.Errors {
		if e.Fatal {
			t.Errorf("fatal error on the page: %+v", e)
		}
	}
	t.Logf("reconnected after the crash: errors shown %+v; longest gap between received audio messages %d ms", st.Errors, st.MaxReceiveGapMS)
	browser.stop()
}

// sessionCloseCode finds the close code of a session in a server's debug
// log, or -1.
func sessionCloseCode(logs, sessionID string) int {
	for _, line := range strings.Split(logs, "\n") {
		var entry struct {
			Msg       string `json:"msg"`
			Session   string `json:"session"`
			CloseCode int    `json:"closeCode"`
		}
		if json.Unmarshal([]byte(line), &entry) == nil && entry.Msg == "session ended" && entry.Session == sessionID {
			return entry.CloseCode
		}
	}
	return -1
}

// requireChromium fails in CI, which must install Chromium, and skips
// elsewhere.
func requireChromium(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("browser test builds and runs the binary and a browser")
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is missing; CI must install Debian's chromium (see .ci/run)", chromiumPath)
		}
		t.Skipf("%s is missing; install it with: apt-get install -y chromium", chromiumPath)
	}
}

func within(t *testing.T, what string, got, want, tolerance float64) {
	t.Helper()
	if want == 0 || math.Abs(got-want)/want > tolerance {
		t.Errorf("%s: %.4f, want %.4f ±%.0f%%", what, got, want, tolerance*100)
	}
}

// writeToneWAV writes the fake microphone's input: a sine tone, PCM16 mono.
func writeToneWAV(t *testing.T, dir string) string {
	t.Helper()
	n := toneRate * toneSeconds
	var b bytes.Buffer
	put := func(v any) { _ = binary.Write(&b, binary.LittleEndian, v) }
	b.WriteString("RIFF")
	put(uint32(36 + n*2))
	b.WriteString("WAVEfmt ")
	put(uint32(16))
	put(uint16(1)) // PCM
	put(uint16(1)) // mono
	put(uint32(toneRate))
	put(uint32(toneRate * 2))
	put(uint16(2))
	put(uint16(16))
	b.WriteString("data")
	put(uint32(n * 2))
	for i := 0; i < n; i++ {
		put(int16(math.Round(toneAmplitude * 32767 * math.Sin(2*math.Pi*toneHz*float64(i)/toneRate))))
	}
	path := filepath.Join(dir, "tone.wav")
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// metric reads one sample from the admin /metrics endpoint; name may
// include labels exactly as exposed. A missing series reads 0.
func (p *process) metric(name string) float64 {
	p.t.Helper()
	code, body := p.adminGet("/metrics")
	if code != http.StatusOK {
		p.t.Fatalf("/metrics: %d", code)
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				p.t.Fatalf("metric %s: %v", name, err)
			}
			return f
		}
	}
	return 0
}

// serviceProxy stands in for a Kubernetes Service: each new connection
// goes to the first backend whose /readyz passes, so that a draining server
// gets no new sessions.
type serviceProxy struct {
	*serviceproxy.Proxy
	backends []*process
	probe    *http.Client
}

// mintClientSecret is an app's backend minting a client secret for its page
// with POST /v1/realtime/client_secrets, in OpenAI's request shape.
func mintClientSecret(t *testing.T, p *process, seconds int) string {
	t.Helper()
	body := fmt.Sprintf(`{"expires_after":{"anchor":"created_at","seconds":%d},"session":{"type":"realtime","instructions":"echo"}}`, seconds)
	req, err := http.NewRequest(http.MethodPost, "http://"+p.public+"/v1/realtime/client_secrets", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var secret struct {
		Value     string         `json:"value"`
		ExpiresAt int64          `json:"expires_at"`
		Session   map[string]any `json:"session"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&secret); err != nil || resp.StatusCode != http.StatusOK || secret.Value == "" || secret.ExpiresAt == 0 {
		t.Fatalf("POST /v1/realtime/client_secrets: HTTP %d, %v", resp.StatusCode, err)
	}
	return secret.Value
}

func startServiceProxy(t *testing.T, backends ...*process) *serviceProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &serviceProxy{backends: backends, probe: &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}}
	p.Proxy = serviceproxy.Start(ln, p.ready)
	t.Cleanup(func() {
		p.Close()
		p.probe.CloseIdleConnections()
	})
	return p
}

func (p *serviceProxy) url() string { return "http://" + p.Addr().String() }

// ready is the public address of the first backend whose /readyz passes;
// "" when none does.
func (p *serviceProxy) ready() string {
	for _, b := range p.backends {
		resp, err := p.probe.Get("http://" + b.admin + "/readyz")
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return b.public
		}
	}
	return ""
}

// browser is one headless Chromium with a fake microphone.
type browser struct {
	t      *testing.T
	ctx    context.Context
	cancel func()

	mu      sync.Mutex
	console []string
}

func startBrowser(t *testing.T, wav string) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.WindowSize(1100, 1250),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("use-fake-device-for-media-stream", true),
		chromedp.Flag("use-file-for-fake-audio-capture", wav),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	b := &browser{t: t, ctx: ctx}
	b.cancel = func() {
		cancelCtx()
		cancelAlloc() // waits for the browser process to exit
	}
	// Start the browser now, so that a broken install fails here.
	if err := chromedp.Do(ctx); err != nil {
		b.cancel()
		t.Fatalf("starting %s: %v", chromiumPath, err)
	}
	// The page's console, printed if the test fails. The reader ends when
	// the browser's context does.
	messages := chromedp.Console(ctx)
	consoleDone := make(chan struct{})
	go func() {
		defer close(consoleDone)
		for m, err := range messages {
			if err != nil {
				return
			}
			b.mu.Lock()
			if len(b.console) < 500 {
				b.console = append(b.console, m.String())
			}
			b.mu.Unlock()
		}
	}()
	stopBrowser := b.cancel
	b.cancel = func() {
		stopBrowser()
		<-consoleDone
	}
	t.Cleanup(func() {
		b.cancel()
		if t.Failed() {
			b.mu.Lock()
			t.Logf("browser console:\n%s", strings.Join(b.console, "\n"))
			b.mu.Unlock()
		}
	})
	return b
}

// stop closes the browser and waits for it (also done at cleanup).
func (b *browser) stop() { b.cancel() }

// startTalking opens url as a new document and presses the talk button
// (a real click, which the browser's autoplay policy asks for).
func (b *browser) startTalking(ctx context.Context, url string) {
	b.t.Helper()
	if err := chromedp.Do(ctx,
		chromedp.Navigate("about:blank"), // a new document even when only the fragment differs
		chromedp.Navigate(url),
		chromedp.WaitEnabled(chromedp.CSS("#talk")),
		chromedp.Click(chromedp.CSS("#talk")),
	); err != nil {
		b.t.Fatalf("opening %s: %v", url, err)
	}
}

func (b *browser) stats(ctx context.Context) (pageStats, error) {
	return chromedp.Run(ctx, chromedp.Evaluate[pageStats](`window.__vgw || {}`))
}

// waitFor polls the page's counters until cond holds; generous timeout,
// since a slow machine is not a failure.
func (b *browser) waitFor(ctx context.Context, what string, cond func(pageStats) bool) pageStats {
	b.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := b.stats(ctx)
		if err == nil && cond(st) {
			return st
		}
		if err != nil && ctx.Err() != nil || time.Now().After(deadline) {
			b.t.Fatalf("waiting for %s: %v; page counters: %+v", what, errors.Join(err, ctx.Err()), st)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// screenshot writes the page as a PNG to the test output directory and
// returns its path.
func (b *browser) screenshot(ctx context.Context, name string) string {
	b.t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot: %v", err)
	}
	dir := testOutputDir(b.t)
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	return path
}

// testOutputDir is where tests leave files for a person to look at:
// $VOICEGATEWAY_TEST_OUTPUT, or bin/test-output in the repository (ignored
// by git).
func testOutputDir(t *testing.T) string {
	dir := os.Getenv("VOICEGATEWAY_TEST_OUTPUT")
	if dir == "" {
		dir = filepath.Join("..", "..", "bin", "test-output")
	}
	dir, err := filepath.Abs(dir)
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		t.Fatal(fmt.Errorf("test output directory: %w", err))
	}
	return dir
}
