package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// epoch is the monotonic origin of the send times embedded in frames. One
// process sends and receives every frame, so no clock is compared across
// machines.
var epoch = time.Now()

func sinceEpoch() time.Duration { return time.Since(epoch) }

// Messages the client sends besides audio.
var (
	commitMessage = []byte(`{"type":"input_audio_buffer.commit"}`)
	appendPrefix  = []byte(`{"type":"input_audio_buffer.append","audio":"`)
	jsonStringEnd = []byte(`"}`)
)

// phaseStats is what all sessions of one phase record. Everything is safe
// for concurrent use.
type phaseStats struct {
	rtt, connect, ready, sendLag, gap *latency

	sent, received, late, reordered, duplicate, unframed atomic.Int64
	// lost is counted when a session ends: sent frames whose echo never came.
	lost atomic.Int64

	closes       counter // how connections ended, e.g. "client 1000", "server 1012", "lost 1006"
	errors       counter // error event codes
	dialFailures counter // HTTP status of refused upgrades, or "network"

	connected     atomic.Int64 // connections open now
	peakConnected atomic.Int64
	sessionsReady atomic.Int64 // sessions that got session.created (or upgraded, for the baseline)
	reconnects    atomic.Int64
	stalls        atomic.Int64 // senders that fell over a second behind and skipped ahead
	notices       atomic.Int64
	firstNotice   atomic.Int64 // unix ns
	lastNotice    atomic.Int64

	// Per target, for the drain report.
	perTarget []targetStats

	// measureFrom: frames sent before it (during the ramp) are not in the
	// latency histograms. Nanoseconds since epoch.
	measureFrom atomic.Int64
	lateAfter   time.Duration
}

type targetStats struct {
	closes   counter
	live     atomic.Int64
	lastEnd  atomic.Int64 // unix ns of the last connection to end here
	sessions atomic.Int64 // connections ever opened here
}

func newPhaseStats(targets int, lateAfter time.Duration) *phaseStats {
	s := &phaseStats{
		rtt: newLatency(), connect: newLatency(), ready: newLatency(),
		sendLag: newLatency(), gap: newLatency(),
		perTarget: make([]targetStats, targets),
		lateAfter: lateAfter,
	}
	s.measureFrom.Store(int64(^uint64(0) >> 1))
	return s
}

func storeMax(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if v <= old || a.CompareAndSwap(old, v) {
			return
		}
	}
}

func storeMinNonZero(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if (old != 0 && v >= old) || a.CompareAndSwap(old, v) {
			return
		}
	}
}

// sessionState is one simulated caller, kept across reconnects: sequence
// numbers go on, so loss is counted over the whole call.
type sessionState struct {
	id   int
	seqs seqSet // written by the current connection's reader only
	// nextSeq is the next frame to send; sent and echoed count unique frames.
	nextSeq atomic.Uint32
	echoed  atomic.Int64
	// lastEcho is when the last echo arrived (unix ns); gapFrom, when set,
	// is the last echo before a move to another server, so that the next
	// connection's first echo measures the audio gap.
	lastEcho atomic.Int64
	gapFrom  int64
	// turn is the current turn (written by the sender only); commits
	// records when each was committed.
	turn    uint32
	commits commitLog
	// When the last committed turn's echo starts, and its length in frames;
	// reset for each new connection (a new backend session).
	lastTurnStart  time.Duration
	lastTurnFrames int
}

// liveConn is one WebSocket connection of a session.
type liveConn struct {
	conn     *websocket.Conn
	target   int
	st       *sessionState
	stats    *phaseStats
	expectID bool // wait for session.created before talking (false for the plain echo baseline)
	// turns: the target echoes per commit (the gateway), not per message.
	turns bool

	ready      chan struct{} // closed on session.created
	draining   chan time.Duration
	readerDone chan struct{}
	readErr    error
	closing    atomic.Bool // the client started the close
	serverRate atomic.Int64
	maxMessage atomic.Int64 // the server's max_message_bytes
	// readDelay makes a slow reader (soak): it pauses after each message.
	readDelay time.Duration
}

// dialer opens WebSocket connections under the loopback guard.
type dialer struct {
	http   *http.Client
	header http.Header
}

func newDialer(apiKey string, allowRemote bool) *dialer {
	d := &dialer{
		http: &http.Client{Transport: &http.Transport{
			DialContext:       guardedDialer(allowRemote).DialContext,
			DisableKeepAlives: true,
			Proxy:             nil,
		}},
		header: http.Header{},
	}
	if apiKey != "" {
		d.header.Set("Authorization", "Bearer "+apiKey)
	}
	return d
}

// dial opens a connection. On refusal it returns the HTTP status as the
// failure key ("503"), or "network" when no HTTP answer came.
func (d *dialer) dial(ctx context.Context, url string, header http.Header) (*websocket.Conn, string, error) {
	if header == nil {
		header = d.header
	}
	conn, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{
		HTTPClient: d.http,
		HTTPHeader: header,
	})
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, strconv.Itoa(resp.StatusCode), err
		}
		return nil, "network", err
	}
	conn.SetReadLimit(1 << 20)
	return conn, "", nil
}

func newLiveConn(conn *websocket.Conn, target int, st *sessionState, stats *phaseStats, expectID bool) *liveConn {
	c := &liveConn{
		conn: conn, target: target, st: st, stats: stats, expectID: expectID, turns: expectID,
		ready:      make(chan struct{}),
		draining:   make(chan time.Duration, 1),
		readerDone: make(chan struct{}),
	}
	if !expectID {
		close(c.ready)
	}
	return c
}

// readLoop reads until the connection ends. It runs on its own goroutine,
// which the connection's owner joins through readerDone.
func (c *liveConn) readLoop(ctx context.Context) {
	defer close(c.readerDone)
	buf := make([]byte, 0, 4096)
	pcm := make([]byte, 0, 2048)
	for {
		typ, r, err := c.conn.Reader(ctx)
		if err != nil {
			c.readErr = err
			return
		}
		buf, err = readAll(r, buf[:0])
		if err != nil {
			c.readErr = err
			return
		}
		if c.readDelay > 0 {
			time.Sleep(c.readDelay)
		}
		now := time.Now()
		if typ == websocket.MessageBinary {
			c.onAudio(buf, now)
			continue
		}
		switch eventType(buf) {
		case "response.output_audio.delta":
			if pcm = decodeBase64Field(buf, `"delta":"`, pcm[:0]); pcm != nil {
				c.onAudio(pcm, now)
			} else {
				c.stats.unframed.Add(1)
			}
		case "input_audio_buffer.append": // the plain echo baseline returns what it got
			if pcm = decodeBase64Field(buf, `"audio":"`, pcm[:0]); pcm != nil {
				c.onAudio(pcm, now)
			} else {
				c.stats.unframed.Add(1)
			}
		case "session.created":
			var ev struct {
				Gateway struct {
					SampleRate      int   `json:"sample_rate"`
					MaxMessageBytes int64 `json:"max_message_bytes"`
				} `json:"gateway"`
			}
			_ = json.Unmarshal(buf, &ev)
			c.serverRate.Store(int64(ev.Gateway.SampleRate))
			c.maxMessage.Store(ev.Gateway.MaxMessageBytes)
			if c.expectID {
				close(c.ready)
				c.expectID = false
			}
		case "error":
			var ev struct {
				Error struct {
					Code string `json:"code"`
				} `json:"error"`
			}
			_ = json.Unmarshal(buf, &ev)
			if ev.Error.Code == "" {
				ev.Error.Code = "(none)"
			}
			c.stats.errors.add(ev.Error.Code, 1)
		case "gateway.draining":
			var ev struct {
				ReconnectAfterMS int64 `json:"reconnect_after_ms"`
			}
			_ = json.Unmarshal(buf, &ev)
			at := now.UnixNano()
			c.stats.notices.Add(1)
			storeMinNonZero(&c.stats.firstNotice, at)
			storeMax(&c.stats.lastNotice, at)
			select {
			case c.draining <- time.Duration(ev.ReconnectAfterMS) * time.Millisecond:
			default:
			}
		}
	}
}

// onAudio accounts for one echoed chunk.
func (c *liveConn) onAudio(chunk []byte, now time.Time) {
	h, err := decodeFrame(chunk)
	if err != nil {
		c.stats.unframed.Add(1)
		return
	}
	fresh, reordered := c.st.seqs.add(h.seq)
	if !fresh {
		c.stats.duplicate.Add(1)
		return
	}
	if reordered {
		c.stats.reordered.Add(1)
	}
	c.st.echoed.Add(1)
	c.stats.received.Add(1)
	if from := c.st.gapFrom; from != 0 {
		c.stats.gap.record(c.st.id, time.Duration(now.UnixNano()-from))
		c.st.gapFrom = 0
	}
	c.st.lastEcho.Store(now.UnixNano())
	// The round trip runs from the moment the echo could first be played:
	// the frame's own send time for a plain echo, its turn's commit plus its
	// place in the turn for the gateway's echo backend.
	from := h.sentAt
	if c.turns {
		if due, ok := c.st.commits.due(h); ok && due > from {
			from = due
		}
	}
	rtt := now.Sub(epoch) - from
	if rtt > c.stats.lateAfter {
		c.stats.late.Add(1)
	}
	if int64(h.sentAt) >= c.stats.measureFrom.Load() {
		c.stats.rtt.record(c.st.id, rtt)
	}
}

// readAll reads a message into buf, growing it as needed.
func readAll(r io.Reader, buf []byte) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// eventType returns the "type" of a server event without decoding the rest:
// the client reads hundreds of thousands of events a second and needs only
// a few of them. Every server event starts with its type.
func eventType(msg []byte) string {
	const key = `"type":"`
	i := bytes.Index(msg, []byte(key))
	if i < 0 || i > 16 {
		var ev struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal(msg, &ev)
		return ev.Type
	}
	rest := msg[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return string(rest[:j])
}

// decodeBase64Field decodes the base64 string value that follows key into
// dst. Base64 needs no JSON escaping, so the value ends at the next quote.
// It returns nil if the field is missing or not base64.
func decodeBase64Field(msg []byte, key string, dst []byte) []byte {
	i := bytes.Index(msg, []byte(key))
	if i < 0 {
		return nil
	}
	val := msg[i+len(key):]
	j := bytes.IndexByte(val, '"')
	if j < 0 {
		return nil
	}
	val = val[:j]
	need := base64.StdEncoding.DecodedLen(len(val))
	if cap(dst) < need {
		dst = make([]byte, 0, need)
	}
	n, err := base64.StdEncoding.Decode(dst[:need], val)
	if err != nil {
		return nil
	}
	return dst[:n]
}

// appendAudioEvent builds an input_audio_buffer.append event for pcm.
func appendAudioEvent(dst, pcm []byte) []byte {
	dst = append(dst, appendPrefix...)
	dst = base64.StdEncoding.AppendEncode(dst, pcm)
	return append(dst, jsonStringEnd...)
}

// endKind names how a connection ended, from the reader's error and who
// began the close.
func endKind(readErr error, clientClosed bool) string {
	code := websocket.CloseStatus(readErr)
	switch {
	case clientClosed && (code == websocket.StatusNormalClosure || code == -1):
		// Our own close: the handshake finished (1000) or we cut it.
		return "client 1000"
	case code != -1:
		return "server " + strconv.Itoa(int(code))
	case errors.Is(readErr, context.Canceled), errors.Is(readErr, context.DeadlineExceeded):
		return "aborted"
	}
	return "lost 1006"
}

// retryable says whether a server close means "try again": a drain
// deadline (1012), a going-away server (1001), a full or draining server (1013).
func retryable(kind string) bool {
	switch kind {
	case "server 1001", "server 1012", "server 1013", "lost 1006":
		return true
	}
	return false
}

// sleepCtx waits d or until ctx or stop ends; it reports whether d passed.
func sleepCtx(ctx context.Context, stop <-chan struct{}, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-stop:
		return false
	}
}

// newRand returns a per-session random source; runs differ, sessions too.
func newRand(id int) *rand.Rand {
	return rand.New(rand.NewPCG(rand.Uint64(), uint64(id)))
}

// commit ends the session's current turn of frames frames. The echo
// backend plays one response at a time and queues the next (docs/protocol.md),
// so a turn committed while the previous one still plays starts when that
// one has played its last chunk; its frames are due from then.
func commit(ctx context.Context, conn *websocket.Conn, st *sessionState, frames int) error {
	start := sinceEpoch()
	if st.lastTurnFrames > 0 {
		start = max(start, st.lastTurnStart+time.Duration(st.lastTurnFrames-1)*frameDuration)
	}
	st.lastTurnStart, st.lastTurnFrames = start, frames
	st.commits.record(st.turn, start)
	st.turn++
	return conn.Write(ctx, websocket.MessageText, commitMessage)
}
