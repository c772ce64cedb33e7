// Package sessiontest serves session.Acceptor on loopback for tests and
// speaks the client side of the protocol to it: dial, send events and
// audio, read until an event, read until the close. The gateway's tests and
// the session package's own use it, so that every test opens its sessions
// through the one admission path the server uses.
package sessiontest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/voicegateway/voicegateway/server/session"
)

// ioTimeout bounds each read and write of a test client; it guards against
// a hang and is never a measure of speed.
const ioTimeout = 10 * time.Second

// Serve serves a on a loopback HTTP server until the test ends, then
// closes the server, forces the registry's sessions to end and waits for
// every request the acceptor took. It returns the ws:// URL.
func Serve(t testing.TB, a *session.Acceptor) string {
	t.Helper()
	return ServeWith(t, a, nil)
}

// ServeWith is Serve with the test server changed by configure before it
// starts: its HTTP settings (srv.Config: timeouts, header limits) or its
// listener (small socket buffers).
func ServeWith(t testing.TB, a *session.Acceptor, configure func(srv *httptest.Server)) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(a)
	if configure != nil {
		configure(srv)
	}
	stopParker := func() {}
	if p := a.Options.Parker; p != nil {
		// The acceptor's Parker runs as the gateway runs it: from the
		// first session until every session has ended.
		ctx, cancel := context.WithCancel(context.Background())
		stopped := make(chan struct{})
		go func() {
			defer close(stopped)
			if err := p.Run(ctx); err != nil {
				t.Errorf("parker: %v", err)
			}
		}()
		stopParker = func() {
			cancel()
			<-stopped
		}
	}
	srv.Start()
	t.Cleanup(func() {
		srv.Close()
		for _, s := range a.Registry.Snapshot() {
			s.Abort()
		}
		done := make(chan struct{})
		go func() {
			a.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(ioTimeout):
			t.Error("sessions did not end after the test")
		}
		stopParker()
	})
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

// Dial opens a session at url (with ?query when not empty) and closes it
// when the test ends.
func Dial(t testing.TB, url, query string, header http.Header) *websocket.Conn {
	t.Helper()
	c, err := TryDial(t, url, query, header)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	return c
}

// TryDial is Dial that returns the error.
func TryDial(t testing.TB, url, query string, header http.Header) (*websocket.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	if query != "" {
		url += "?" + query
	}
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: header})
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		return nil, err
	}
	c.SetReadLimit(1 << 20)
	t.Cleanup(func() { c.CloseNow() })
	return c, nil
}

// Frame is one message a test client received.
type Frame struct {
	Binary bool
	Data   []byte
	Event  map[string]any
}

// Type is the event's type, "" for binary audio.
func (f Frame) Type() string {
	s, _ := f.Event["type"].(string)
	return s
}

// ErrorCode is the code of an error event.
func (f Frame) ErrorCode() string {
	e, _ := f.Event["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

// Read reads one message.
func Read(t testing.TB, c *websocket.Conn) (Frame, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	typ, data, err := c.Read(ctx)
	if err != nil {
		return Frame{}, err
	}
	f := Frame{Binary: typ == websocket.MessageBinary, Data: data}
	if !f.Binary {
		if err := json.Unmarshal(data, &f.Event); err != nil {
			t.Fatalf("server sent invalid JSON %q: %v", data, err)
		}
	}
	return f, nil
}

// ReadUntil reads until an event of type want, returning everything read.
func ReadUntil(t testing.TB, c *websocket.Conn, want string) []Frame {
	t.Helper()
	var got []Frame
	for {
		f, err := Read(t, c)
		if err != nil {
			t.Fatalf("reading until %s: %v (got %d frames)", want, err, len(got))
		}
		got = append(got, f)
		if f.Type() == want {
			return got
		}
	}
}

// ReadClose reads until the connection closes and returns the close status
// and every frame before it.
func ReadClose(t testing.TB, c *websocket.Conn) (websocket.StatusCode, []Frame) {
	t.Helper()
	var got []Frame
	for {
		f, err := Read(t, c)
		if err != nil {
			return websocket.CloseStatus(err), got
		}
		got = append(got, f)
	}
}

// Send writes v as a JSON text message.
func Send(t testing.TB, c *websocket.Conn, v any) {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	SendRaw(t, c, websocket.MessageText, data)
}

// SendRaw writes one message as it is.
func SendRaw(t testing.TB, c *websocket.Conn, typ websocket.MessageType, data []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	if err := c.Write(ctx, typ, data); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// Tone returns n bytes of PCM16 that differ sample to sample, so that a
// reordered or truncated echo is noticed.
func Tone(n int) []byte {
	b := make([]byte, n)
	for i := 0; i+1 < n; i += 2 {
		v := int16((i * 37) % 20000)
		b[i], b[i+1] = byte(v), byte(v>>8)
	}
	return b
}

// AppendEvent is input_audio_buffer.append carrying pcm.
func AppendEvent(pcm []byte) map[string]any {
	return map[string]any{"type": "input_audio_buffer.append", "audio": base64.StdEncoding.EncodeToString(pcm)}
}

// EchoedAudio collects output audio from frames, binary or base64.
func EchoedAudio(t testing.TB, frames []Frame) []byte {
	t.Helper()
	var out []byte
	for _, f := range frames {
		switch {
		case f.Binary:
			out = append(out, f.Data...)
		case f.Type() == "response.output_audio.delta":
			pcm, err := base64.StdEncoding.DecodeString(f.Event["delta"].(string))
			if err != nil {
				t.Fatalf("bad base64 in delta: %v", err)
			}
			out = append(out, pcm...)
		}
	}
	return out
}
