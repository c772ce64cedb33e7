package openai

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/coder/websocket"
	"github.com/go-logr/logr"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/voicegateway/voicegateway/internal/testkit"
	"github.com/voicegateway/voicegateway/server/backend"
	"github.com/voicegateway/voicegateway/server/config"
	"github.com/voicegateway/voicegateway/server/metrics"
	"github.com/voicegateway/voicegateway/server/protocol"
)

// The relay benchmarks measure what the gateway itself spends per 20 ms
// audio frame (960 bytes of PCM16 at 24 kHz) in each direction, through
// the real reader and writer goroutines and relay queue, with the upstream
// socket replaced by a stand-in: the WebSocket library's framing and the
// system calls are left out, as are the session's own costs on the client
// side (measured in server/protocol and server/session).

const frameBytes = 24000 * 2 / 50

func benchBackend(b *testing.B) *Backend {
	b.Helper()
	cfg := config.Default().OpenAI
	cfg.APIKeyFile = filepath.Join(b.TempDir(), "key")
	testkit.ReplaceFile(b, cfg.APIKeyFile, testKey)
	be, err := New(cfg, Options{Clock: testingclock.NewFakeClock(testEpoch), Metrics: metrics.New(), Log: logr.Discard()})
	if err != nil {
		b.Fatal(err)
	}
	return be
}

// benchUpstream stands in for the upstream socket: Write counts and drops,
// Reader serves one prepared message want times and then waits for the
// connection to close.
type benchUpstream struct {
	closed  chan struct{}
	written atomic.Int64
	wrote   chan struct{} // closed when written reaches want
	want    int64

	message []byte
	served  int64
	reader  bytes.Reader
}

func newBenchUpstream(want int, message []byte) *benchUpstream {
	return &benchUpstream{closed: make(chan struct{}), wrote: make(chan struct{}), want: int64(want), message: message}
}

func (u *benchUpstream) Reader(context.Context) (websocket.MessageType, io.Reader, error) {
	if u.message != nil && u.served < u.want {
		u.served++
		u.reader.Reset(u.message)
		return websocket.MessageText, &u.reader, nil
	}
	<-u.closed
	return 0, nil, errors.New("closed")
}

func (u *benchUpstream) Write(context.Context, websocket.MessageType, []byte) error {
	if u.written.Add(1) == u.want {
		close(u.wrote)
	}
	return nil
}

func (u *benchUpstream) Ping(context.Context) error               { return nil }
func (u *benchUpstream) Close(websocket.StatusCode, string) error { return u.CloseNow() }

func (u *benchUpstream) CloseNow() error {
	select {
	case <-u.closed:
	default:
		close(u.closed)
	}
	return nil
}

// countingSink drops what it is given and closes done after want calls.
type countingSink struct {
	calls atomic.Int64
	want  int64
	done  chan struct{}
}

func newCountingSink(want int) *countingSink {
	return &countingSink{want: int64(want), done: make(chan struct{})}
}

func (s *countingSink) count() error {
	if s.calls.Add(1) == s.want {
		close(s.done)
	}
	return nil
}

func (s *countingSink) Event(protocol.Event) error              { return s.count() }
func (s *countingSink) Raw([]byte) error                        { return s.count() }
func (s *countingSink) Audio(protocol.ContentRef, []byte) error { return s.count() }
func (s *countingSink) Fail(*protocol.Error)                    {}

var _ backend.Sink = (*countingSink)(nil)

// BenchmarkRelayUp: client frame in (Handle, on the session's reader) to
// upstream message written (on the writer goroutine).
func BenchmarkRelayUp(b *testing.B) {
	pcm := pcmOf(frameBytes, 1)
	var dec protocol.Decoder
	textMsg := []byte(appendMsg(pcm))
	for _, tt := range []struct {
		name   string
		binary bool
	}{
		{name: "binary frame to append", binary: true},
		{name: "base64 append passed through"},
	} {
		b.Run(tt.name, func(b *testing.B) {
			be := benchBackend(b)
			ctx, cancel := context.WithCancel(context.Background())
			c := newConn(ctx, be, defaultInfo(tt.binary), newCountingSink(-1))
			up := newBenchUpstream(b.N, nil)
			c.start(up)
			var ev protocol.ClientEvent
			if tt.binary {
				ev, _ = dec.DecodeBinary(pcm)
			} else {
				ev, _ = dec.DecodeText(textMsg)
			}
			b.SetBytes(frameBytes)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				// Stay clear of the queue's bound: the benchmark measures
				// the relay, not its overflow.
				for len(c.queue) > relayQueueMessages/2 {
					runtime.Gosched()
				}
				if err := c.Handle(ctx, &ev); err != nil {
					b.Fatal(err)
				}
			}
			<-up.wrote
			b.StopTimer()
			cancel()
			_ = c.Close()
		})
	}
}

// BenchmarkRelayDown: upstream response.output_audio.delta read (on the
// reader goroutine) to the client sink.
func BenchmarkRelayDown(b *testing.B) {
	delta := []byte(`{"type":"response.output_audio.delta","event_id":"event_CJ1aZ4ZkrIfS8MgeKzCvT","response_id":"resp_CJ1aY3PDGfxEb0RHNdZ9b","item_id":"item_CJ1aYOBlE2Ak6jRKM8aFD","output_index":0,"content_index":0,"delta":"` +
		base64.StdEncoding.EncodeToString(pcmOf(frameBytes, 2)) + `"}`)
	for _, tt := range []struct {
		name   string
		binary bool
	}{
		{name: "delta to binary client", binary: true},
		{name: "delta to base64 client"},
	} {
		b.Run(tt.name, func(b *testing.B) {
			be := benchBackend(b)
			ctx, cancel := context.WithCancel(context.Background())
			sink := newCountingSink(b.N)
			c := newConn(ctx, be, defaultInfo(tt.binary), sink)
			up := newBenchUpstream(b.N, delta)
			b.SetBytes(frameBytes)
			b.ReportAllocs()
			b.ResetTimer()
			c.start(up)
			<-sink.done
			b.StopTimer()
			cancel()
			_ = c.Close()
		})
	}
}
