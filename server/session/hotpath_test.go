package session_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/utils/clock"

	"github.com/voicegateway/voicegateway/server/backend"
	"github.com/voicegateway/voicegateway/server/memory"
	"github.com/voicegateway/voicegateway/server/metrics"
	"github.com/voicegateway/voicegateway/server/protocol"
	"github.com/voicegateway/voicegateway/server/session"
	"github.com/voicegateway/voicegateway/server/session/sessiontest"
)

// The audio frame is the one message a talking session handles fifty times
// a second each way, so its path through the session must not allocate:
// an allocation per frame is garbage the collector works through for every
// frame of every session. These tests run a real session on loopback, with
// the memory budget and metrics of a server, and count the allocations of
// the whole process per frame (testing.AllocsPerRun), from the client's
// write to the backend's Handle, and from the backend's Sink.Audio to the
// bytes at the client. The client is a raw TCP connection that speaks just
// enough WebSocket to send frames and count the ones it gets, so that
// nothing of its own is counted.

// frameBytes is 20 ms of 24 kHz PCM16 mono.
const frameBytes = 960

// hotPathRuns is the number of frames each count averages over.
const hotPathRuns = 500

// sinkBackend hands the test its session's Sink and tells it about every
// client event the session passes on.
type sinkBackend struct {
	sinks   chan backend.Sink
	handled chan string
}

func (b *sinkBackend) Name() string { return "sink" }

func (b *sinkBackend) Open(_ context.Context, _ backend.Info, sink backend.Sink) (backend.Conn, error) {
	b.sinks <- sink
	return sinkConn{handled: b.handled}, nil
}

type sinkConn struct{ handled chan string }

func (c sinkConn) Handle(_ context.Context, ev *protocol.ClientEvent) *protocol.Error {
	c.handled <- ev.Type
	return nil
}

func (sinkConn) Close() error { return nil }

// rawClient is the client end of a session: it writes prepared frames
// and reports every server message it reads on got.
type rawClient struct {
	conn net.Conn
	got  chan struct{}
}

// openRaw opens a session on url with query, by hand.
func openRaw(t *testing.T, url, query string) *rawClient {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "ws://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	req := "GET /v1/realtime?" + query + " HTTP/1.1\r\nHost: gateway\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReaderSize(conn, 64<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %s", resp.Status)
	}
	c := &rawClient{conn: conn, got: make(chan struct{}, 1<<16)}
	go c.read(br)
	return c
}

// read counts whole server messages (unmasked frames with FIN) until the
// connection ends; it allocates nothing per message.
func (c *rawClient) read(br *bufio.Reader) {
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(br, hdr[:2]); err != nil {
			return
		}
		n := int(hdr[1] & 0x7f)
		switch n {
		case 126:
			if _, err := io.ReadFull(br, hdr[:2]); err != nil {
				return
			}
			n = int(binary.BigEndian.Uint16(hdr[:2]))
		case 127:
			if _, err := io.ReadFull(br, hdr[:8]); err != nil {
				return
			}
			n = int(binary.BigEndian.Uint64(hdr[:8]))
		}
		if _, err := br.Discard(n); err != nil {
			return
		}
		c.got <- struct{}{}
	}
}

// maskedFrame is a client frame of opcode carrying payload (masked, as a
// client must send it).
func maskedFrame(opcode byte, payload []byte) []byte {
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	f := []byte{0x80 | opcode}
	switch n := len(payload); {
	case n < 126:
		f = append(f, 0x80|byte(n))
	case n <= 0xffff:
		f = append(f, 0x80|126, byte(n>>8), byte(n))
	default:
		panic("frame too large for this test")
	}
	f = append(f, key[:]...)
	for i, b := range payload {
		f = append(f, b^key[i%4])
	}
	return f
}

// hotPath serves one session with a server's memory budget and metrics
// and opens it with query.
func hotPath(t *testing.T, query string) (*rawClient, backend.Sink, chan string) {
	t.Helper()
	cfg := defaultConfig()
	// The counts run frames back to back: far faster than a caller talks.
	cfg.InboundRate, cfg.InboundBurst = 1e9, 1<<20
	m := metrics.New()
	b := &sinkBackend{sinks: make(chan backend.Sink, 1), handled: make(chan string, 16)}
	a := &session.Acceptor{
		Registry: session.NewRegistry(10),
		Memory:   memory.NewBudget(1<<30, m),
		Options: session.Options{
			Config: cfg, Clock: clock.RealClock{}, Backend: b, Metrics: m, Log: logr.Discard(),
		},
	}
	c := openRaw(t, sessiontest.Serve(t, a), query)
	var sink backend.Sink
	select {
	case sink = <-b.sinks:
	case <-time.After(10 * time.Second):
		t.Fatal("the session did not open its backend")
	}
	return c, sink, b.handled
}

func pcmFrame() []byte {
	pcm := make([]byte, frameBytes)
	for i := range pcm {
		pcm[i] = byte(i * 7)
	}
	return pcm
}

// TestAudioOutAllocatesNothing: an audio frame from the backend to the
// client, as a binary message or a base64 response.output_audio.delta,
// allocates nothing: pooled buffers, no per-write context or timer.
func TestAudioOutAllocatesNothing(t *testing.T) {
	for _, query := range []string{"audio=binary", ""} {
		name := "base64"
		if query != "" {
			name = "binary"
		}
		t.Run(name, func(t *testing.T) {
			c, sink, _ := hotPath(t, query)
			pcm := pcmFrame()
			ref := protocol.ContentRef{ResponseID: "resp_1", ItemID: "item_1"}
			allocs := testing.AllocsPerRun(hotPathRuns, func() {
				if err := sink.Audio(ref, pcm); err != nil {
					t.Fatal(err)
				}
				<-c.got
			})
			if allocs != 0 {
				t.Errorf("%.2f allocations per audio frame sent, want 0", allocs)
			}
		})
	}
}

// TestAudioInAllocatesNothing: an audio frame from the client to the
// backend, as a binary message or a base64 input_audio_buffer.append,
// allocates nothing.
func TestAudioInAllocatesNothing(t *testing.T) {
	pcm := pcmFrame()
	for _, tc := range []struct {
		name, query string
		frame       []byte
	}{
		{"binary", "audio=binary", maskedFrame(0x2, pcm)},
		{"base64", "", maskedFrame(0x1, []byte(`{"type":"input_audio_buffer.append","audio":"`+base64.StdEncoding.EncodeToString(pcm)+`"}`))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _, handled := hotPath(t, tc.query)
			allocs := testing.AllocsPerRun(hotPathRuns, func() {
				if _, err := c.conn.Write(tc.frame); err != nil {
					t.Fatal(err)
				}
				if typ := <-handled; typ != protocol.TypeInputAudioAppend {
					t.Fatalf("the backend was handed %s", typ)
				}
			})
			if allocs != 0 {
				t.Errorf("%.2f allocations per audio frame received, want 0", allocs)
			}
		})
	}
}
