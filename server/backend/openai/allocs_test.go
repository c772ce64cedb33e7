package openai

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-logr/logr"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/voicegateway/voicegateway/internal/testkit"
	"github.com/voicegateway/voicegateway/server/backend"
	"github.com/voicegateway/voicegateway/server/config"
	"github.com/voicegateway/voicegateway/server/metrics"
	"github.com/voicegateway/voicegateway/server/protocol"
)

// The allocation guards: a relayed 20 ms audio frame allocates nothing in
// steady state, in either direction, through the real WebSocket library
// on a loopback socket. The peer is an upstream that allocates nothing
// itself (it reads into one buffer and answers every append with a delta
// of the same audio built in another), so that what testing.AllocsPerRun
// counts for the whole process is the relay's.

// echoUpstream is that peer. It speaks just enough of the Realtime
// protocol: every input_audio_buffer.append is answered at once with a
// response.output_audio.delta carrying the same base64 audio; everything
// else is read and ignored.
type echoUpstream struct {
	srv    *httptest.Server
	URL    string
	served atomic.Int64
}

func newEchoUpstream(t testing.TB) *echoUpstream {
	u := &echoUpstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	u.URL = "ws" + strings.TrimPrefix(u.srv.URL, "http") + "/v1/realtime"
	t.Cleanup(u.srv.Close)
	return u
}

var (
	echoAudioKey    = []byte(`"audio":"`)
	echoDeltaPrefix = []byte(`{"type":"response.output_audio.delta","event_id":"event_1","response_id":"resp_1","item_id":"item_1","output_index":0,"content_index":0,"delta":"`)
)

func (u *echoUpstream) serve(w http.ResponseWriter, r *http.Request) {
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return
	}
	defer ws.CloseNow()
	ctx := context.Background()
	in := make([]byte, 0, 64<<10)
	out := make([]byte, 0, 64<<10)
	for {
		_, rd, err := ws.Reader(ctx)
		if err != nil {
			return
		}
		in = in[:0]
		for {
			n, err := rd.Read(in[len(in):cap(in)])
			in = in[:len(in)+n]
			if err != nil {
				break
			}
		}
		i := bytes.Index(in, echoAudioKey)
		if i < 0 {
			continue
		}
		audio := in[i+len(echoAudioKey):]
		audio = audio[:bytes.IndexByte(audio, '"')]
		out = append(append(append(out[:0], echoDeltaPrefix...), audio...), `"}`...)
		u.served.Add(1)
		if ws.Write(ctx, websocket.MessageText, out) != nil {
			return
		}
	}
}

// signalSink wakes the test for every audio frame it is given, as binary
// audio or as a raw delta; other events are dropped.
type signalSink struct {
	frames chan struct{}
	// deadline bounds each wait; one timer, reset, since time.After
	// would allocate.
	deadline *time.Timer
}

func (s *signalSink) signal() {
	select {
	case s.frames <- struct{}{}:
	default:
	}
}

func (s *signalSink) Event(protocol.Event) error { return nil }
func (s *signalSink) Raw(data []byte) error {
	if bytes.Contains(data[:min(len(data), 64)], []byte(typeAudioDelta)) {
		s.signal()
	}
	return nil
}
func (s *signalSink) Audio(protocol.ContentRef, []byte) error { s.signal(); return nil }
func (s *signalSink) Fail(*protocol.Error)                    {}

var _ backend.Sink = (*signalSink)(nil)

// openEchoRelay opens a real session of the openai backend to a fresh
// echoUpstream.
func openEchoRelay(t testing.TB, binary bool) (backend.Conn, *signalSink) {
	t.Helper()
	up := newEchoUpstream(t)
	cfg := config.Default().OpenAI
	cfg.URL, cfg.APIKeyFile = up.URL, filepath.Join(t.TempDir(), "key")
	cfg.DialTimeout = 5 * time.Second
	testkit.ReplaceFile(t, cfg.APIKeyFile, testKey)
	be, err := New(cfg, Options{Clock: testingclock.NewFakeClock(testEpoch), Metrics: metrics.New(), Log: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	sink := &signalSink{frames: make(chan struct{}, 1), deadline: time.NewTimer(waitTimeout)}
	t.Cleanup(func() { sink.deadline.Stop() })
	c, err := be.Open(context.Background(), defaultInfo(binary), sink)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, sink
}

// relayRoundTrip sends one client frame and waits for its echo to reach
// the sink.
func relayRoundTrip(t testing.TB, c backend.Conn, sink *signalSink, ev *protocol.ClientEvent) {
	if err := c.Handle(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	sink.deadline.Reset(waitTimeout)
	select {
	case <-sink.frames:
	case <-sink.deadline.C:
		t.Fatal("the frame's echo never came back")
	}
}

// relayCases are the audio paths of a session: a binary client (binary
// frame → append, delta → binary audio) and a base64 client (append passed
// through, delta passed through).
func relayCases(t testing.TB) []struct {
	name   string
	binary bool
	ev     protocol.ClientEvent
} {
	pcm := pcmOf(frameBytes, 3)
	var dec protocol.Decoder
	bin, err := dec.DecodeBinary(pcm)
	if err != nil {
		t.Fatal(err)
	}
	var dec2 protocol.Decoder
	text, perr := dec2.DecodeText([]byte(`{"type":"input_audio_buffer.append","audio":"` + base64.StdEncoding.EncodeToString(pcm) + `"}`))
	if perr != nil {
		t.Fatal(perr)
	}
	return []struct {
		name   string
		binary bool
		ev     protocol.ClientEvent
	}{
		{name: "binary client", binary: true, ev: bin},
		{name: "base64 client", ev: text},
	}
}

// TestRelayedFrameAllocatesNothing: a 20 ms frame up and its echo down,
// through the real library on a real socket, allocate nothing once the
// session is warm.
func TestRelayedFrameAllocatesNothing(t *testing.T) {
	for _, tt := range relayCases(t) {
		t.Run(tt.name, func(t *testing.T) {
			c, sink := openEchoRelay(t, tt.binary)
			for range 50 { // warm: pools, the library's buffers, the scheduler
				relayRoundTrip(t, c, sink, &tt.ev)
			}
			assertNoAllocs(t, "a relayed frame and its echo", func() { relayRoundTrip(t, c, sink, &tt.ev) })
		})
	}
}

// BenchmarkRelayRoundTrip: one frame up and its echo down through the
// real library on loopback, the upstream included.
func BenchmarkRelayRoundTrip(b *testing.B) {
	for _, tt := range relayCases(b) {
		b.Run(tt.name, func(b *testing.B) {
			c, sink := openEchoRelay(b, tt.binary)
			for range 50 {
				relayRoundTrip(b, c, sink, &tt.ev)
			}
			b.SetBytes(2 * frameBytes)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				relayRoundTrip(b, c, sink, &tt.ev)
			}
		})
	}
}

// assertNoAllocs fails the test when frame allocates. Under the race
// detector, whose sync.Pool drops a quarter of what is Put, the buffers
// made anew by a pool are not the code's own allocations: there every
// allocation frame makes is looked up in the heap profile, and any that is
// not a pool's refill fails the test.
func assertNoAllocs(t *testing.T, what string, frame func()) {
	t.Helper()
	const runs = 200
	if !raceEnabled {
		if n := testing.AllocsPerRun(runs, frame); n != 0 {
			t.Errorf("%s allocate %v times; want 0", what, n)
		}
		return
	}
	old := runtime.MemProfileRate
	runtime.MemProfileRate = 1
	defer func() { runtime.MemProfileRate = old }()
	for range runs / 4 { // made before the profile counts every allocation
		frame()
	}
	before := allocSites()
	for range runs {
		frame()
	}
	// As testing.AllocsPerRun, which divides by the runs: fewer
	// allocations than frames (the runtime warming its caches of
	// goroutine waiters and threads) are not a frame's.
	var total int64
	var sites []string
	for stack, n := range allocSites() {
		if n <= before[stack] || isPoolRefill(stack) || strings.Contains(stack, "openai.allocSites\n") {
			continue
		}
		total += n - before[stack]
		sites = append(sites, fmt.Sprintf("%d at\n%s", n-before[stack], stack))
	}
	if total >= runs {
		t.Errorf("%s allocate %d times in %d runs (pool refills left out):\n%s", what, total, runs, strings.Join(sites, ""))
	}
}

// allocSites are the heap profile's allocation counts by call stack, as
// of now: the profile is published by a completed garbage collection.
func allocSites() map[string]int64 {
	// What reading the profile allocates is not counted.
	rate := runtime.MemProfileRate
	runtime.MemProfileRate = 0
	defer func() { runtime.MemProfileRate = rate }()
	runtime.GC()
	runtime.GC()
	var records []runtime.MemProfileRecord
	n, _ := runtime.MemProfile(nil, true)
	for {
		records = make([]runtime.MemProfileRecord, n+50)
		var ok bool
		if n, ok = runtime.MemProfile(records, true); ok {
			records = records[:n]
			break
		}
	}
	sites := make(map[string]int64, len(records))
	for _, r := range records {
		var b strings.Builder
		frames := runtime.CallersFrames(r.Stack())
		for {
			f, more := frames.Next()
			fmt.Fprintf(&b, "\t%s\n", f.Function)
			if !more {
				break
			}
		}
		sites[b.String()] += r.AllocObjects
	}
	return sites
}

// isPoolRefill reports an allocation made inside a sync.Pool: a buffer
// made anew for one the race detector dropped, or the pool's own list
// growing to hold it.
func isPoolRefill(stack string) bool { return strings.Contains(stack, "\tsync.(*Pool).") }

// BenchmarkDirectRoundTrip is BenchmarkRelayRoundTrip's reference: the
// same append sent straight to the same upstream by a WebSocket client and
// its delta read back, with no relay between. The difference is what the
// relay itself adds per frame on an otherwise idle machine.
func BenchmarkDirectRoundTrip(b *testing.B) {
	up := newEchoUpstream(b)
	ctx := context.Background()
	ws, _, err := websocket.Dial(ctx, up.URL, &websocket.DialOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		b.Fatal(err)
	}
	defer ws.CloseNow()
	msg := []byte(appendMsg(pcmOf(frameBytes, 3)))
	buf := make([]byte, 0, 8<<10)
	roundTrip := func() {
		if err := ws.Write(ctx, websocket.MessageText, msg); err != nil {
			b.Fatal(err)
		}
		_, r, err := ws.Reader(ctx)
		if err != nil {
			b.Fatal(err)
		}
		buf = buf[:0]
		for {
			n, err := r.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			if err != nil {
				break
			}
		}
	}
	for range 50 {
		roundTrip()
	}
	b.SetBytes(2 * frameBytes)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		roundTrip()
	}
}
