package voiceclient

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/voicegateway/voicegateway/server/config"
	"github.com/voicegateway/voicegateway/server/gateway"
)

// recorder keeps what a call's sessions heard; its hooks run on the
// sessions' reader goroutines.
type recorder struct {
	mu        sync.Mutex
	echoed    map[uint32]int // echoes per sequence number
	unframed  int
	maxDelay  time.Duration
	errors    []string            // error event codes
	firstAt   map[*Conn]time.Time // first audio of each session
	endedAt   map[*Conn]time.Time
	draining  []Draining
	ends      []End
	conns     []*Conn
	lastAudio time.Time
}

func newRecorder() *recorder {
	return &recorder{echoed: map[uint32]int{}, firstAt: map[*Conn]time.Time{}, endedAt: map[*Conn]time.Time{}}
}

// options returns the options of one more session whose hooks feed r; the
// connection is known to the hooks through *conn once Dial returns.
func (r *recorder) options(opts Options, conn **Conn) Options {
	opts.OnAudio = func(a Audio) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.lastAudio = a.At
		if _, seen := r.firstAt[*conn]; !seen && *conn != nil {
			r.firstAt[*conn] = a.At
		}
		if !a.Framed {
			r.unframed++
			return
		}
		r.echoed[a.Frame.Seq]++
		r.maxDelay = max(r.maxDelay, a.Delay())
	}
	opts.OnEvent = func(ev Event) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if ev.Error != nil {
			r.errors = append(r.errors, ev.Error.Code)
		}
		if ev.Draining != nil {
			r.draining = append(r.draining, *ev.Draining)
		}
	}
	opts.OnEnd = func(e End) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.ends = append(r.ends, e)
		r.endedAt[*conn] = time.Now()
	}
	return opts
}

// open opens a session whose hooks feed r.
func (r *recorder) open(t *testing.T, opts Options) *Conn {
	t.Helper()
	var conn *Conn
	r.mu.Lock()
	o := r.options(opts, &conn)
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, o)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	r.mu.Lock()
	conn = c
	r.conns = append(r.conns, c)
	r.mu.Unlock()
	t.Cleanup(c.CloseNow)
	if err := c.WaitReady(ctx); err != nil {
		t.Fatalf("session.created: %v", err)
	}
	return c
}

// checkEchoed fails unless every one of sent frames came back exactly once.
func (r *recorder) checkEchoed(t *testing.T, sent int64) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if sent < 10 {
		t.Fatalf("only %d frames sent", sent)
	}
	for seq := range uint32(sent) {
		if n := r.echoed[seq]; n != 1 {
			t.Errorf("frame %d echoed %d times, want 1", seq, n)
		}
	}
	if len(r.echoed) != int(sent) || r.unframed != 0 {
		t.Errorf("%d distinct frames echoed and %d unframed chunks for %d sent", len(r.echoed), r.unframed, sent)
	}
	// The delay runs from when a frame could first play; on loopback the
	// echo is there within a few frames.
	if r.maxDelay > time.Second {
		t.Errorf("longest echo delay %v", r.maxDelay)
	}
}

func TestTalk(t *testing.T) {
	tests := map[string]struct {
		server      func(t *testing.T) *voiceServer // nil: a plain WebSocket echo
		opts        func(t *testing.T, s *voiceServer) Options
		sampleRate  int
		commitEvery int
		transport   string // what session.created says
	}{
		"binary at 24 kHz, no credential": {
			server:     func(t *testing.T) *voiceServer { return startVoiceServer(t, nil) },
			opts:       func(t *testing.T, s *voiceServer) Options { return Options{URL: s.url, Binary: true} },
			sampleRate: 24000, commitEvery: 5, transport: "binary",
		},
		"base64 at 16 kHz, API key header": {
			server: func(t *testing.T) *voiceServer {
				withKey := withAPIKey(t)
				return startVoiceServer(t, func(c *config.Config) { withKey(c); c.Sessions.SampleRate = 16000 })
			},
			opts:       func(t *testing.T, s *voiceServer) Options { return Options{URL: s.url, APIKey: testAPIKey} },
			sampleRate: 16000, commitEvery: 50, transport: "base64",
		},
		"binary, client token in ?token=, a turn per frame": {
			server: func(t *testing.T) *voiceServer { return startVoiceServer(t, withAPIKey(t)) },
			opts: func(t *testing.T, s *voiceServer) Options {
				return Options{URL: s.url, Token: s.mintToken(t, false), Binary: true}
			},
			sampleRate: 24000, commitEvery: 1, transport: "binary",
		},
		"a client token whose claims fix binary audio": {
			server: func(t *testing.T) *voiceServer { return startVoiceServer(t, withAPIKey(t)) },
			opts: func(t *testing.T, s *voiceServer) Options {
				return Options{URL: s.url, Token: s.mintToken(t, true)}
			},
			sampleRate: 24000, commitEvery: 5, transport: "binary",
		},
		"plain echo, base64": {
			opts: func(t *testing.T, _ *voiceServer) Options {
				return Options{URL: startPlainEcho(t), PlainEcho: true}
			},
			sampleRate: 24000, commitEvery: 5,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var s *voiceServer
			if tc.server != nil {
				s = tc.server(t)
			}
			opts := tc.opts(t, s)
			opts.SampleRate = tc.sampleRate
			rec := newRecorder()
			conn := rec.open(t, opts)
			if got := conn.Session(); tc.transport != "" && (got.AudioTransport != tc.transport || got.SampleRate != tc.sampleRate || got.ID == "") {
				t.Fatalf("session.created: %+v, want %s at %d Hz", got, tc.transport, tc.sampleRate)
			}
			frames := 0
			call := NewCall(CallOptions{SampleRate: tc.sampleRate, CommitEvery: tc.commitEvery,
				OnFrame: func(h FrameHeader, lag time.Duration) { frames++ }})
			call.Start(context.Background(), conn)
			time.Sleep(500 * time.Millisecond)
			call.Finish(context.Background(), 5*time.Second)
			rec.checkEchoed(t, call.Sent())
			if int64(frames) != call.Sent() {
				t.Errorf("OnFrame saw %d frames, Sent says %d", frames, call.Sent())
			}
			if e := conn.End(); !e.ByClient || !e.Ready || (e.Code != websocket.StatusNormalClosure && e.Code != -1) {
				t.Errorf("end %+v, want the client's close", e)
			}
		})
	}
}

// A session that ends at once ends without a single frame being lost to a
// race: a Call that was never started finishes as cleanly.
func TestFinishWithoutTalking(t *testing.T) {
	s := startVoiceServer(t, nil)
	rec := newRecorder()
	conn := rec.open(t, Options{URL: s.url, Binary: true, SampleRate: 24000})
	call := NewCall(CallOptions{SampleRate: 24000, CommitEvery: 5})
	call.Start(context.Background(), conn)
	call.Finish(context.Background(), time.Second)
	if e := conn.End(); !e.ByClient {
		t.Fatalf("end %+v", e)
	}
	if err := call.Move(context.Background(), conn); err == nil {
		t.Fatal("Move after Finish succeeded")
	}
}

func TestRefusals(t *testing.T) {
	s := startVoiceServer(t, withAPIKey(t))
	tests := map[string]struct {
		opts       Options
		wantStatus int    // an HTTP refusal; 0: refused after the upgrade
		wantCode   string // its error.code
		wantErr    error
	}{
		"no credential":            {opts: Options{}, wantStatus: http.StatusUnauthorized, wantCode: "unauthorized"},
		"a wrong key":              {opts: Options{APIKey: "not-the-key-0123456789"}, wantStatus: http.StatusUnauthorized, wantCode: "unauthorized"},
		"an API key as a token":    {opts: Options{Token: testAPIKey}, wantStatus: http.StatusUnauthorized, wantCode: "unauthorized"},
		"another sample rate":      {opts: Options{APIKey: testAPIKey, SampleRate: 16000}, wantErr: ErrSampleRate},
		"the right key, 24 kHz ok": {opts: Options{APIKey: testAPIKey, SampleRate: 24000}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			tc.opts.URL = s.url
			conn, err := Open(ctx, tc.opts)
			var refused *RefusedError
			switch {
			case tc.wantStatus != 0:
				if !errors.As(err, &refused) || refused.Status != tc.wantStatus || refused.Code != tc.wantCode {
					t.Fatalf("err %v, want HTTP %d %s", err, tc.wantStatus, tc.wantCode)
				}
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err %v, want %v", err, tc.wantErr)
				}
			case err != nil:
				t.Fatal(err)
			default:
				if err := conn.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestMintRefused(t *testing.T) {
	s := startVoiceServer(t, withAPIKey(t))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := MintToken(ctx, MintOptions{URL: s.http + gateway.PathClientTokens, APIKey: "not-the-key-0123456789"})
	var refused *RefusedError
	if !errors.As(err, &refused) || refused.Status != http.StatusUnauthorized || refused.Code != "unauthorized" {
		t.Fatalf("err %v, want HTTP 401 unauthorized", err)
	}
}

// Error events reach the hooks with their codes, and a session the server
// ends says its close code and reason.
func TestErrorsAndCloses(t *testing.T) {
	s := startVoiceServer(t, func(c *config.Config) { c.Sessions.MaxMessageBytes = 64 << 10 })
	rec := newRecorder()
	conn := rec.open(t, Options{URL: s.url, Binary: true})
	if got := conn.Session().MaxMessageBytes; got != 64<<10 {
		t.Fatalf("max_message_bytes %d", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := conn.Send(ctx, websocket.MessageText, []byte(`{"type":"voiceclient.not_an_event"}`)); err != nil {
		t.Fatal(err)
	}
	// The session goes on after an invalid event: audio still comes back.
	if err := conn.SendAudio(ctx, NewFrame(24000)); err != nil {
		t.Fatal(err)
	}
	if err := conn.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the echo after an invalid event", func() bool { return conn.Echoed() })
	if err := conn.Send(ctx, websocket.MessageBinary, make([]byte, 64<<10+2)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-conn.Done():
	case <-ctx.Done():
		t.Fatal("the server did not end the session")
	}
	e := conn.End()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if fmt.Sprint(rec.errors) != "[invalid_event frame_too_large]" {
		t.Errorf("error events %v", rec.errors)
	}
	if e.Code != websocket.StatusMessageTooBig || e.Reason != "frame_too_large" || e.ByClient || e.Cut || !e.Ready {
		t.Errorf("end %+v, want the server's 1009 frame_too_large", e)
	}
	if len(rec.ends) != 1 {
		t.Errorf("OnEnd called %d times", len(rec.ends))
	}
}

// A session the server ends under a talking call: the call stops sending
// to it, and finishing the call still returns at once with nothing left
// running.
func TestServerEndsTalkingCall(t *testing.T) {
	s := startVoiceServer(t, func(c *config.Config) { c.Sessions.MaxMessageBytes = 64 << 10 })
	rec := newRecorder()
	conn := rec.open(t, Options{URL: s.url, Binary: true, SampleRate: 24000})
	stalls := 0
	call := NewCall(CallOptions{SampleRate: 24000, CommitEvery: 5, OnStall: func(int) { stalls++ }})
	call.Start(context.Background(), conn)
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := conn.Send(ctx, websocket.MessageBinary, make([]byte, 64<<10+2)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-conn.Done():
	case <-ctx.Done():
		t.Fatal("the server did not end the session")
	}
	sent := call.Sent()
	time.Sleep(1200 * time.Millisecond) // longer than a stall
	start := time.Now()
	call.Finish(ctx, 5*time.Second)
	if took := time.Since(start); took > time.Second {
		t.Errorf("Finish took %v on an ended session", took)
	}
	if call.Sent() != sent || stalls != 0 {
		t.Errorf("%d frames sent to an ended session, %d stalls", call.Sent()-sent, stalls)
	}
	if e := conn.End(); e.Code != websocket.StatusMessageTooBig {
		t.Errorf("end %+v, want 1009", e)
	}
}

// A drain moves a call make before break: the draining server says so, the
// call opens a session on another server, commits the turn in progress on
// the old one, and hangs up the old one with 1000 once the new one echoes.
// No frame is lost on the way.
func TestDrainMove(t *testing.T) {
	t.Run("own goroutine", func(t *testing.T) { testDrainMove(t, nil) })
	t.Run("shared pacer", func(t *testing.T) {
		pacer := NewPacer()
		defer pacer.Close()
		testDrainMove(t, pacer)
	})
}

func testDrainMove(t *testing.T, pacer *Pacer) {
	a := startVoiceServer(t, nil)
	b := startVoiceServer(t, nil)
	rec := newRecorder()
	old := rec.open(t, Options{URL: a.url, Binary: true, SampleRate: 24000})
	call := NewCall(CallOptions{SampleRate: 24000, CommitEvery: 10, MoveTimeout: 5 * time.Second, Pacer: pacer})
	call.Start(context.Background(), old)
	time.Sleep(300 * time.Millisecond)

	a.srv.BeginDrain()
	select {
	case <-old.Draining():
	case <-time.After(5 * time.Second):
		t.Fatal("no gateway.draining")
	}
	notice := old.Notice()
	if notice.ReconnectAfter <= 0 || !notice.Deadline.After(time.Now()) || notice.At.IsZero() {
		t.Fatalf("notice %+v", notice)
	}
	time.Sleep(notice.ReconnectAfter)
	next := rec.open(t, Options{URL: b.url, Binary: true, SampleRate: 24000})
	sentBefore := call.Sent()
	if err := call.Move(context.Background(), next); err != nil {
		t.Fatal(err)
	}
	if call.Conn() != next {
		t.Fatal("frames do not go to the new session")
	}
	select {
	case <-old.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the old session is still open")
	}
	if e := old.End(); !e.ByClient || e.Code != websocket.StatusNormalClosure {
		t.Fatalf("old session ended %+v, want the client's 1000", e)
	}
	// The draining server had nothing left and stopped.
	if err := a.wait(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	call.Finish(context.Background(), 5*time.Second)
	rec.checkEchoed(t, call.Sent())

	rec.mu.Lock()
	defer rec.mu.Unlock()
	if call.Sent() <= sentBefore+10 {
		t.Fatalf("%d frames before the move, %d in all", sentBefore, call.Sent())
	}
	firstNew, echoed := rec.firstAt[next]
	if oldEnded := rec.endedAt[old]; !echoed || oldEnded.Before(firstNew) {
		t.Fatalf("the old session ended at %v, the new one first echoed at %v (%v): not make before break", oldEnded, firstNew, echoed)
	}
	if len(rec.draining) != 1 {
		t.Fatalf("notices %+v", rec.draining)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
