package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/voicegateway/voicegateway/internal/testkit"
	"github.com/voicegateway/voicegateway/server/backend/openai/openaitest"
)

// The openai backend end to end: the real binary relays real WebSocket
// clients to a local stand-in for the OpenAI Realtime API
// (server/backend/openai/openaitest), which also injects the faults.

const upstreamKey = "sk-e2e-upstream-key-0123456789"

// writeUpstreamKey writes the upstream key file the way a kubelet updates
// a mounted Secret: a complete new file swapped in.
func writeUpstreamKey(t *testing.T, path, key string) {
	t.Helper()
	testkit.ReplaceFile(t, path, key+"\n")
}

// startOpenAIGateway runs the binary with --backend openai pointed at url.
func startOpenAIGateway(t *testing.T, url string, extraArgs ...string) (*process, string) {
	t.Helper()
	keyFile := filepath.Join(t.TempDir(), "openai-api-key")
	writeUpstreamKey(t, keyFile, upstreamKey)
	p := startProcess(t, append([]string{
		"--backend", "openai", "--openai-url", url, "--openai-api-key-file", keyFile,
		"--openai-dial-timeout", "2s",
	}, extraArgs...)...)
	return p, keyFile
}

// assertBaseline waits for the gateway to be back where it was before the
// test's sessions: no session registered, no upstream connection open, as
// many goroutines as at idle; and for the upstream to hold no connection.
func assertBaseline(t *testing.T, p *process, up *openaitest.Server, idleGoroutines int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		sessions := p.status().Sessions
		conns := p.metric("voicegateway_upstream_connections")
		queued := p.metric("voicegateway_upstream_relay_queue_messages")
		g := p.memStats().Goroutines
		if sessions == 0 && conns == 0 && queued == 0 && g <= idleGoroutines && (up == nil || up.OpenConns() == 0) {
			return
		}
		if time.Now().After(deadline) {
			open := -1
			if up != nil {
				open = up.OpenConns()
			}
			t.Fatalf("not back to baseline: sessions %v, upstream connections %v (upstream sees %d), relay queue %v, goroutines %d (idle %d)",
				sessions, conns, open, queued, g, idleGoroutines)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rtClient is one realtime client of the gateway.
type rtClient struct {
	t      *testing.T
	c      *websocket.Conn
	ctx    context.Context
	binary bool
	events []map[string]any
	audio  []byte // binary audio, or decoded response.output_audio.delta
}

func dialGateway(t *testing.T, ctx context.Context, p *process, binary bool) *rtClient {
	t.Helper()
	c, resp, err := p.dial(ctx, binary)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return &rtClient{t: t, c: c, ctx: ctx, binary: binary}
}

func (r *rtClient) send(ev map[string]any) {
	r.t.Helper()
	data, _ := json.Marshal(ev)
	if err := r.c.Write(r.ctx, websocket.MessageText, data); err != nil {
		r.t.Fatalf("send %v: %v", ev["type"], err)
	}
}

func (r *rtClient) sendAudio(pcm []byte) {
	r.t.Helper()
	for off := 0; off < len(pcm); off += 960 {
		chunk := pcm[off:min(off+960, len(pcm))]
		if r.binary {
			if err := r.c.Write(r.ctx, websocket.MessageBinary, chunk); err != nil {
				r.t.Fatalf("send audio: %v", err)
			}
		} else {
			r.send(map[string]any{"type": "input_audio_buffer.append", "audio": base64.StdEncoding.EncodeToString(chunk)})
		}
	}
}

// next reads one message: an event, or binary audio (nil event).
func (r *rtClient) next() (map[string]any, error) {
	typ, data, err := r.c.Read(r.ctx)
	if err != nil {
		return nil, err
	}
	if typ == websocket.MessageBinary {
		r.audio = append(r.audio, data...)
		return nil, nil
	}
	var ev map[string]any
	if err := json.Unmarshal(data, &ev); err != nil {
		r.t.Fatalf("invalid JSON from the gateway: %q", data)
	}
	r.events = append(r.events, ev)
	if ev["type"] == "response.output_audio.delta" || ev["type"] == "response.audio.delta" {
		b, _ := base64.StdEncoding.DecodeString(ev["delta"].(string))
		r.audio = append(r.audio, b...)
	}
	return ev, nil
}

// readUntil reads until an event of type typ arrives and returns it.
func (r *rtClient) readUntil(typ string) map[string]any {
	r.t.Helper()
	for {
		ev, err := r.next()
		if err != nil {
			r.t.Fatalf("waiting for %s: %v (events so far: %v)", typ, err, r.types())
		}
		if ev != nil && ev["type"] == typ {
			return ev
		}
	}
}

// readClose reads until the gateway closes the connection and returns the
// close status and reason and when the close arrived.
func (r *rtClient) readClose() (websocket.CloseError, time.Time) {
	r.t.Helper()
	for {
		if _, err := r.next(); err != nil {
			at := time.Now()
			var ce websocket.CloseError
			if !errors.As(err, &ce) {
				r.t.Fatalf("connection ended without a close frame: %v (events: %v)", err, r.types())
			}
			return ce, at
		}
	}
}

func (r *rtClient) types() []string {
	var out []string
	for _, ev := range r.events {
		out = append(out, ev["type"].(string))
	}
	return out
}

// errorCodes lists the error.code of every error event received, in order.
func (r *rtClient) errorCodes() []string {
	var out []string
	for _, ev := range r.events {
		if ev["type"] == "error" {
			body, _ := ev["error"].(map[string]any)
			code, _ := body["code"].(string)
			out = append(out, code)
		}
	}
	return out
}

func tonePCM(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*13 + i/7)
	}
	return b
}

// TestOpenAIFullTurn: a whole turn through the real gateway to the
// upstream and back, in both audio transports: session.created with the
// gateway's object, session.update, audio in, audio and transcript out,
// an unknown event each way, an upstream error that does not end the
// session; then a normal close that frees both connections.
func TestOpenAIFullTurn(t *testing.T) {
	for _, tt := range []struct {
		name   string
		binary bool
	}{{name: "base64"}, {name: "binary", binary: true}} {
		t.Run(tt.name, func(t *testing.T) {
			up := openaitest.New(openaitest.Options{Keys: []string{upstreamKey}})
			defer up.Close()
			p, _ := startOpenAIGateway(t, up.URL)
			idle := p.memStats().Goroutines
			leaks := goleak.IgnoreCurrent()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()

			cl := dialGateway(t, ctx, p, tt.binary)
			created := cl.readUntil("session.created")
			upConn := up.WaitConn(1, 10*time.Second)
			if upConn == nil {
				t.Fatal("no upstream connection")
			}
			if got := upConn.Header.Get("Authorization"); got != "Bearer "+upstreamKey {
				t.Errorf("upstream got Authorization %q", got)
			}
			if created["event_id"] != upConn.Sent()[0].EventID {
				t.Errorf("session.created event_id %v, want the upstream's %s", created["event_id"], upConn.Sent()[0].EventID)
			}
			gw, _ := created["gateway"].(map[string]any)
			wantTransport := map[bool]string{false: "base64", true: "binary"}[tt.binary]
			if gw["audio_transport"] != wantTransport || gw["sample_rate"] != float64(24000) || !strings.HasPrefix(gw["session_id"].(string), "sess_") {
				t.Errorf("gateway object = %v", gw)
			}
			if session, _ := created["session"].(map[string]any); session["model"] != "gpt-realtime" {
				t.Errorf("session.model = %v", session["model"])
			}

			cl.send(map[string]any{"type": "session.update", "session": map[string]any{"type": "realtime", "instructions": "be brief"}})
			cl.readUntil("session.updated")

			pcm := tonePCM(24000 * 2 * 3 / 10) // 300 ms
			cl.sendAudio(pcm)
			cl.send(map[string]any{"type": "input_audio_buffer.commit", "event_id": "c-commit"})
			cl.readUntil("input_audio_buffer.committed")
			cl.send(map[string]any{"type": "response.create"})
			cl.readUntil("response.done")
			cl.readUntil("rate_limits.updated") // the upstream's last event of a response
			if !bytes.Equal(cl.audio, pcm) {
				t.Errorf("got %d bytes of audio back, want the %d sent", len(cl.audio), len(pcm))
			}
			if !bytes.Equal(upConn.Appended(), pcm) {
				t.Errorf("upstream got %d bytes of audio, want %d", len(upConn.Appended()), len(pcm))
			}
			var transcript string
			for _, ev := range cl.events {
				if ev["type"] == "response.output_audio_transcript.done" {
					transcript, _ = ev["transcript"].(string)
				}
			}
			if transcript != "echo of 14400 bytes" {
				t.Errorf("transcript %q", transcript)
			}
			// Every upstream event arrived with its event_id; in binary
			// mode the audio deltas came as binary messages instead.
			got := map[string]bool{}
			for _, ev := range cl.events {
				if id, ok := ev["event_id"].(string); ok {
					got[id] = true
				}
			}
			for _, sent := range upConn.Sent() {
				if tt.binary && sent.Type == "response.output_audio.delta" {
					continue
				}
				if !got[sent.EventID] {
					t.Errorf("upstream %s %s never reached the client", sent.Type, sent.EventID)
				}
			}

			// Unknown types pass both ways.
			cl.send(map[string]any{"type": "conversation.item.create", "event_id": "c-item",
				"item": map[string]any{"type": "message", "role": "user", "content": []any{map[string]any{"type": "input_text", "text": "hi"}}}})
			cl.readUntil("conversation.item.done")
			if r, ok := upConn.WaitReceived("conversation.item.create", 5*time.Second); !ok || r.EventID != "c-item" {
				t.Errorf("upstream got %+v", r)
			}
			// An upstream error that does not end the session passes on.
			upConn.Inject(openaitest.FaultError)
			errEv := cl.readUntil("error")
			if body, _ := errEv["error"].(map[string]any); body["code"] != "invalid_value" {
				t.Errorf("relayed error = %v", errEv)
			}
			cl.send(map[string]any{"type": "input_audio_buffer.clear"})
			cl.readUntil("input_audio_buffer.cleared")

			if err := cl.c.Close(websocket.StatusNormalClosure, "done"); err != nil {
				t.Fatalf("client close: %v", err)
			}
			assertBaseline(t, p, up, idle)
			if got := upConn.CloseStatus(); got != websocket.StatusNormalClosure {
				t.Errorf("the gateway closed the upstream with %d, want 1000", got)
			}
			up.Close()
			if err := goleak.Find(leaks); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestOpenAIFaults: each kind of upstream trouble gives the client its
// documented error code and close code, promptly, and frees everything.
// Times are measured from the fault in the upstream to the client seeing
// the close and logged; only bounds that cannot flake are asserted.
func TestOpenAIFaults(t *testing.T) {
	const stall = 1500 * time.Millisecond
	tests := []struct {
		name string
		opts openaitest.Options
		// args are extra gateway flags; url, when set, replaces the
		// upstream's URL (an unreachable upstream).
		args []string
		url  func(t *testing.T) string
		// setup prepares the upstream before the client connects.
		setup func(up *openaitest.Server)
		// fault is injected once the session is up; 0 for faults that
		// happen while it opens.
		fault openaitest.Fault
		// wantErrors are the error codes the client sees, in order: the
		// gateway's own code last, after any upstream error relayed.
		wantErrors []string
		wantClose  websocket.StatusCode
		wantKind   string
		// bound is a generous upper bound on fault-to-close.
		bound time.Duration
	}{
		{name: "upstream refuses the key", opts: openaitest.Options{Keys: []string{"sk-other"}},
			wantErrors: []string{"upstream_unauthorized"}, wantClose: 1011, wantKind: "unauthorized", bound: 5 * time.Second},
		{name: "upstream refuses the key at the handshake", opts: openaitest.Options{Keys: []string{"sk-other"}, AuthFailure: openaitest.AuthFailureHTTP},
			wantErrors: []string{"upstream_unauthorized"}, wantClose: 1011, wantKind: "unauthorized", bound: 5 * time.Second},
		{name: "upstream unreachable", url: closedPortURL,
			wantErrors: []string{"backend_unavailable"}, wantClose: 1011, wantKind: "unreachable", bound: 5 * time.Second},
		{name: "upstream handshake times out", args: []string{"--openai-dial-timeout", "500ms"},
			setup:      func(up *openaitest.Server) { up.SetHangHandshake(true) },
			wantErrors: []string{"backend_unavailable"}, wantClose: 1011, wantKind: "dial_timeout", bound: 5 * time.Second},
		{name: "upstream closes mid-stream", fault: openaitest.FaultClose,
			wantErrors: []string{"upstream_closed"}, wantClose: 1011, wantKind: "closed", bound: 5 * time.Second},
		{name: "upstream drops mid-stream", fault: openaitest.FaultDrop,
			wantErrors: []string{"upstream_closed"}, wantClose: 1011, wantKind: "closed", bound: 5 * time.Second},
		{name: "upstream stalls mid-stream", fault: openaitest.FaultStall,
			wantErrors: []string{"upstream_stalled"}, wantClose: 1011, wantKind: "stalled", bound: 2 * stall},
		{name: "malformed upstream message", fault: openaitest.FaultMalformed,
			wantErrors: []string{"upstream_protocol_error"}, wantClose: 1011, wantKind: "malformed", bound: 5 * time.Second},
		{name: "oversized upstream message", fault: openaitest.FaultOversized,
			opts: openaitest.Options{OversizedBytes: 100 << 10}, args: []string{"--openai-max-message-bytes", "65536"},
			wantErrors: []string{"upstream_protocol_error"}, wantClose: 1011, wantKind: "too_large", bound: 5 * time.Second},
		{name: "upstream session expired", fault: openaitest.FaultSessionExpired,
			wantErrors: []string{"session_expired", "session_expired"}, wantClose: 1008, wantKind: "session_expired", bound: 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.opts.Keys == nil {
				tt.opts.Keys = []string{upstreamKey}
			}
			up := openaitest.New(tt.opts)
			defer up.Close()
			url := up.URL
			if tt.url != nil {
				url = tt.url(t)
			}
			p, _ := startOpenAIGateway(t, url, append([]string{"--openai-stall-timeout", stall.String()}, tt.args...)...)
			idle := p.memStats().Goroutines
			leaks := goleak.IgnoreCurrent()
			if tt.setup != nil {
				tt.setup(up)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()

			cl := dialGateway(t, ctx, p, true)
			// Faults while the session opens are timed from the upgrade
			// (for a key refused after the upgrade, from the refusal).
			faultAt := time.Now()
			if tt.fault != 0 {
				cl.readUntil("session.created")
				cl.sendAudio(tonePCM(9600))
				cl.send(map[string]any{"type": "input_audio_buffer.commit"})
				cl.readUntil("input_audio_buffer.committed")
				upConn := up.WaitConn(1, 10*time.Second)
				faultAt = upConn.Inject(tt.fault)
			}
			ce, closedAt := cl.readClose()
			if tt.fault == 0 && tt.opts.AuthFailure == openaitest.AuthFailureEvent && up.WaitConn(1, 0) != nil {
				faultAt = up.WaitConn(1, 0).Sent()[0].At
			}
			elapsed := closedAt.Sub(faultAt)
			t.Logf("%s: client got %v and close %d %q %v after the fault", tt.name, cl.errorCodes(), ce.Code, ce.Reason, elapsed)

			if got := cl.errorCodes(); strings.Join(got, ",") != strings.Join(tt.wantErrors, ",") {
				t.Errorf("error codes %v, want %v", got, tt.wantErrors)
			}
			wantCode := tt.wantErrors[len(tt.wantErrors)-1]
			if ce.Code != tt.wantClose || ce.Reason != wantCode {
				t.Errorf("close %d %q, want %d %q", ce.Code, ce.Reason, tt.wantClose, wantCode)
			}
			last := cl.events[len(cl.events)-1]
			if body, _ := last["error"].(map[string]any); last["type"] != "error" || body["session_id"] == nil || body["message"] == "" {
				t.Errorf("last event = %v, want the gateway's error with the session id", last)
			}
			for _, ev := range cl.events {
				if strings.Contains(ev["type"].(string), "error") && strings.Contains(string(mustJSON(ev)), "sk-") {
					t.Errorf("the client was shown part of a key: %v", ev)
				}
			}
			if elapsed > tt.bound {
				t.Errorf("close came %v after the fault, beyond %v", elapsed, tt.bound)
			}
			if n := p.metric(`voicegateway_upstream_errors_total{kind="` + tt.wantKind + `"}`); n != 1 {
				t.Errorf("upstream_errors_total{kind=%q} = %v, want 1", tt.wantKind, n)
			}
			up.SetHangHandshake(false)
			assertBaseline(t, p, up, idle)
			up.Close()
			if err := goleak.Find(leaks); err != nil {
				t.Error(err)
			}
		})
	}
}

func mustJSON(v any) []byte {
	data, _ := json.Marshal(v)
	return data
}

// closedPortURL is an upstream URL on a loopback port nobody listens on.
func closedPortURL(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "ws://" + addr + openaitest.Path
}

// TestOpenAIKeyRotation: the upstream key file is re-read while the server
// runs; a rotated key is used from the next session on, and the session
// already open keeps its upstream.
func TestOpenAIKeyRotation(t *testing.T) {
	up := openaitest.New(openaitest.Options{Keys: []string{upstreamKey}})
	defer up.Close()
	p, keyFile := startOpenAIGateway(t, up.URL, "--openai-key-poll-interval", "200ms")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	first := dialGateway(t, ctx, p, true)
	first.readUntil("session.created")

	// The upstream revokes the old key: until the Secret is updated, new
	// sessions are refused.
	const rotated = "sk-e2e-rotated-key-9876543210"
	up.SetKeys(rotated)
	refused := dialGateway(t, ctx, p, true)
	if ce, _ := refused.readClose(); ce.Reason != "upstream_unauthorized" {
		t.Fatalf("session with the revoked key closed with %v", ce)
	}

	writeUpstreamKey(t, keyFile, rotated)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.Logs(), "Reloaded secret file") {
		if time.Now().After(deadline) {
			t.Fatal("the key file was not reloaded")
		}
		time.Sleep(20 * time.Millisecond)
	}
	second := dialGateway(t, ctx, p, true)
	second.readUntil("session.created")
	conns := up.Conns()
	if got := conns[len(conns)-1].Header.Get("Authorization"); got != "Bearer "+rotated {
		t.Errorf("new session sent %q", got)
	}
	// The first session's upstream was not disturbed.
	first.send(map[string]any{"type": "input_audio_buffer.clear"})
	first.readUntil("input_audio_buffer.cleared")
	if strings.Contains(p.Logs(), upstreamKey) || strings.Contains(p.Logs(), rotated) {
		t.Error("the log shows an upstream key")
	}
}

// TestOpenAIDrain: a draining session keeps its upstream and can finish
// its turn after gateway.draining; at the deadline the client gets 1012,
// the upstream a normal close, and the process exits 0 with nothing left.
func TestOpenAIDrain(t *testing.T) {
	up := openaitest.New(openaitest.Options{Keys: []string{upstreamKey}})
	defer up.Close()
	p, _ := startOpenAIGateway(t, up.URL,
		"--drain-timeout", "4s", "--exit-margin", "2s", "--propagation-delay", "300ms",
		"--notify-window", "300ms", "--reconnect-after", "100ms")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	cl := dialGateway(t, ctx, p, true)
	cl.readUntil("session.created")
	upConn := up.WaitConn(1, 10*time.Second)
	signalled := time.Now()
	p.Signal(syscall.SIGTERM)
	cl.readUntil("gateway.draining")

	// The turn in progress finishes through the same upstream.
	pcm := tonePCM(9600)
	cl.sendAudio(pcm)
	cl.send(map[string]any{"type": "input_audio_buffer.commit"})
	cl.send(map[string]any{"type": "response.create"})
	cl.readUntil("response.done")
	if !bytes.Equal(cl.audio, pcm) {
		t.Errorf("turn after the notice: got %d bytes back, want %d", len(cl.audio), len(pcm))
	}
	if len(up.Conns()) != 1 {
		t.Errorf("%d upstream connections, want the session's one", len(up.Conns()))
	}

	ce, closedAt := cl.readClose()
	if ce.Code != websocket.StatusServiceRestart {
		t.Errorf("close %v, want 1012 at the deadline", ce)
	}
	if code := p.WaitExit(15 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	select {
	case <-upConn.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream connection outlived the process")
	}
	if got := upConn.CloseStatus(); got != websocket.StatusNormalClosure {
		t.Errorf("upstream closed with %d, want 1000", got)
	}
	t.Logf("closed with 1012 %v after SIGTERM; upstream closed with %d", closedAt.Sub(signalled), upConn.CloseStatus())
}
