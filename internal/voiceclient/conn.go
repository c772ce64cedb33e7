// Package voiceclient is a client of the voice gateway's session protocol
// (docs/protocol.md) for load tools and tests: it opens a session (an API
// key, a client token or nothing; binary or base64 audio), waits for
// session.created, sends 20 ms PCM16 frames paced in real time with a
// commit every N frames, reads the server's events and audio, and, when the
// server drains, moves a call to a new session make before break.
//
// Two types do the work. A Conn is one WebSocket session: its reader
// goroutine decodes what the server sends and hands it to the caller's hooks,
// and it ends when the Conn is closed. A Call is one caller talking: it
// numbers frames and turns across its sessions, paces frames onto the
// current Conn, and owns the closing of the one it moves away from.
//
// Every frame carries a header (sequence number, send time, turn and place
// in the turn), so that an echoed chunk names the frame it came from: loss,
// reordering and round trips are exact, not sampled.
//
// A Call sends from a goroutine of its own, or, given a Pacer, from the
// Pacer's: one goroutine per millisecond slot of the frame period for all
// the calls of a load run.
//
// Every goroutine has an owner: a Conn's reader ends with Close or
// CloseNow (or the server's close), a Call's with Finish or Close, a
// Pacer's with its Close.
package voiceclient

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Options say how to open one session and what to hear from it.
type Options struct {
	// URL is the gateway's session URL, ws://host:port/v1/realtime.
	URL string
	// APIKey is sent as Authorization: Bearer; Token, a client token, in
	// ?token=. Neither is needed by a server run with --insecure-no-auth.
	APIKey, Token string
	// Binary asks for the binary audio fast path (?audio=binary, unless the
	// URL already names an audio transport). session.created says which
	// transport the session really has (a client token may fix it), and
	// audio is sent in that one.
	Binary bool
	// SampleRate, when set, must be the rate session.created announces.
	SampleRate int
	// Header holds more request headers (X-Forwarded-For, a wrong key).
	Header http.Header
	// HTTPClient dials (a loopback guard, a small receive buffer); nil is a
	// client without keep-alives or proxies.
	HTTPClient *http.Client
	// PlainEcho says the server is a plain WebSocket echo (vgload's
	// baseline), not the gateway: nothing says session.created, and the
	// client's own input_audio_buffer.append events come back as audio.
	PlainEcho bool
	// ReadDelay makes a slow reader: the reader pauses after each message.
	ReadDelay time.Duration
	// ReadLimit bounds one server message (default 1 MiB).
	ReadLimit int64
	// Resume is the resume handle of a gateway.draining (Draining.Resume)
	// to present (?resume=), so that the session continues the
	// conversation; the server answers gateway.resumed (Event.Resumed), or
	// an error and a fresh session.
	Resume string

	// The hooks are called on the connection's reader goroutine, in the
	// order the server sent things; they must return quickly. The slices
	// they are given are valid only during the call.
	//
	// OnAudio gets each chunk of output audio: a binary message or a
	// decoded response.output_audio.delta.
	OnAudio func(Audio)
	// OnEvent gets every other text event.
	OnEvent func(Event)
	// OnEnd gets how the connection ended, once, before Done is closed.
	OnEnd func(End)
}

// Audio is one chunk of output audio as it arrived.
type Audio struct {
	PCM []byte
	At  time.Time
	// Framed says PCM starts with a frame header, which Frame holds.
	Framed bool
	Frame  FrameHeader
	// Due is when the echo of Frame could first play, since the epoch: its
	// turn's commit (or the end of the turn before, which the echo backend
	// plays first) plus 20 ms per place in the turn; for a plain echo the
	// frame's own send time.
	Due time.Duration
}

// Delay is how long after it could first play the echoed frame arrived.
func (a Audio) Delay() time.Duration { return elapsedAt(a.At) - a.Due }

// Event is one text event from the server. Error and Draining are decoded
// for the events of those types.
type Event struct {
	Type     string
	At       time.Time
	Raw      []byte
	Error    *ErrorInfo
	Draining *Draining
	Resumed  *Resumed
	// ResponseNumber is a response.created's response id's number (the
	// echo backend's turn counter: resp_7 is 7); 0 otherwise.
	ResponseNumber int
}

// Resumed is gateway.resumed: the session continues a conversation.
type Resumed struct {
	SessionID string `json:"session_id"`
	Restored  int    `json:"restored"`
	Dropped   int    `json:"dropped"`
}

// ErrorInfo is an error event's error object.
type ErrorInfo struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Param   string `json:"param"`
}

// Draining is a gateway.draining notice: finish the turn and reconnect
// after about ReconnectAfter; the server closes the session with 1012 at
// Deadline.
type Draining struct {
	ReconnectAfter time.Duration
	Deadline       time.Time
	At             time.Time // when it arrived
	// Resume is the session's resume handle, for Options.Resume; empty
	// when the server gave none. A bearer secret: never print it.
	Resume string
}

// SessionInfo is what session.created negotiated.
type SessionInfo struct {
	ID              string
	AudioTransport  string // binary or base64
	SampleRate      int
	MaxMessageBytes int64
}

// End is how a connection ended.
type End struct {
	// Code is the close code the server sent or answered with; -1 when no
	// close frame came (the connection broke, or the client cut it).
	Code   websocket.StatusCode
	Reason string
	// ByClient: the client began the close handshake (Close). Cut: the
	// client dropped the connection without one (CloseNow).
	ByClient, Cut bool
	// Ready: session.created had arrived (or the server is a plain echo).
	Ready bool
	// Err is what ended the reader.
	Err error
}

// RefusedError is an upgrade the server answered with an HTTP error.
type RefusedError struct {
	Status     int
	Code       string // the body's error.code, e.g. unauthorized, server_draining
	RetryAfter time.Duration
	Err        error
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("refused with HTTP %d %s: %v", e.Status, e.Code, e.Err)
}

func (e *RefusedError) Unwrap() error { return e.Err }

// ErrSampleRate is returned by WaitReady when the server speaks another rate.
var ErrSampleRate = errors.New("sample rate mismatch")

// Conn is one session. Its reader goroutine runs from Dial until the
// connection ends; the caller ends it with Close or CloseNow, which wait for
// the reader.
type Conn struct {
	ws   *websocket.Conn
	opts Options

	ready    chan struct{} // closed on session.created
	draining chan struct{} // closed on the first gateway.draining
	done     chan struct{} // closed when the reader has ended
	session  SessionInfo   // written before ready closes
	notice   Draining      // written before draining closes
	end      End           // written before done closes

	binary   atomic.Bool
	byClient atomic.Bool
	cut      atomic.Bool

	// Frames sent and echoed on this connection, for knowing when it has
	// played back everything committed on it.
	framesSent, framesEchoed, chunks atomic.Int64
	writeFailed                      atomic.Bool // the Call stops sending here

	// writeTimer cuts the connection when a Call's write takes longer than
	// its WriteTimeout: one timer for the connection's life, armed around
	// each write, where a context with a deadline per write would allocate
	// a timer and a cancel function for every frame.
	writeTimer *time.Timer

	// Turn timing, written by the Call that sends on this connection; the
	// reader reads commits (allocated at the first commit).
	commits        atomic.Pointer[commitLog]
	lastTurnStart  time.Duration
	lastTurnFrames int
}

// Dial opens a WebSocket session and starts its reader; session.created
// may not have arrived yet (WaitReady). A refused upgrade is a
// *RefusedError.
func Dial(ctx context.Context, opts Options) (*Conn, error) {
	target, err := sessionURL(opts)
	if err != nil {
		return nil, err
	}
	header := opts.Header.Clone()
	if header == nil {
		header = http.Header{}
	}
	if opts.APIKey != "" {
		header.Set("Authorization", "Bearer "+opts.APIKey)
	}
	client := opts.HTTPClient
	if client == nil {
		client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	}
	ws, resp, err := websocket.Dial(ctx, target, &websocket.DialOptions{HTTPClient: client, HTTPHeader: header})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, refusal(resp, err)
		}
		return nil, err
	}
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	limit := opts.ReadLimit
	if limit <= 0 {
		limit = 1 << 20
	}
	ws.SetReadLimit(limit)
	c := &Conn{
		ws: ws, opts: opts,
		ready: make(chan struct{}), draining: make(chan struct{}), done: make(chan struct{}),
	}
	c.binary.Store(opts.Binary)
	c.writeTimer = time.AfterFunc(time.Hour, func() { _ = ws.CloseNow() })
	c.writeTimer.Stop()
	if opts.PlainEcho {
		close(c.ready)
	} else {
		// A caller that commits its own turns, as an OpenAI Realtime app
		// doing push-to-talk does: turn detection off, so that a commit
		// only commits and response.create (sent with each commit) asks
		// for the echo. Written before any frame, it is read before any.
		// A failed write shows as the connection's end to the reader.
		_ = ws.Write(ctx, websocket.MessageText, manualTurnsMessage)
	}
	go c.read()
	return c, nil
}

// Open dials and waits for session.created; on failure the connection is
// cut and gone.
func Open(ctx context.Context, opts Options) (*Conn, error) {
	c, err := Dial(ctx, opts)
	if err != nil {
		return nil, err
	}
	if err := c.WaitReady(ctx); err != nil {
		c.CloseNow()
		return nil, err
	}
	return c, nil
}

func sessionURL(opts Options) (string, error) {
	u, err := url.Parse(opts.URL)
	if err != nil {
		return "", err
	}
	q := u.Query()
	if opts.Binary && !opts.PlainEcho && q.Get("audio") == "" {
		q.Set("audio", "binary")
	}
	if opts.Token != "" {
		q.Set("token", opts.Token)
	}
	if opts.Resume != "" {
		q.Set("resume", opts.Resume)
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

func refusal(resp *http.Response, err error) *RefusedError {
	e := &RefusedError{Status: resp.StatusCode, Err: err}
	if s, perr := strconv.Atoi(resp.Header.Get("Retry-After")); perr == nil {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	if resp.Body != nil {
		var body struct {
			Error ErrorInfo `json:"error"`
		}
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
		resp.Body.Close()
		if json.Unmarshal(data, &body) == nil {
			e.Code = body.Error.Code
		}
	}
	return e
}

// WaitReady waits for session.created. It fails if the connection ends
// first (the error holds the End's close code) or the server's sample rate
// is not Options.SampleRate (ErrSampleRate).
func (c *Conn) WaitReady(ctx context.Context) error {
	select {
	case <-c.ready:
	case <-c.done:
		e := c.end
		return fmt.Errorf("session ended before session.created (close %d %q): %w", e.Code, e.Reason, e.Err)
	case <-ctx.Done():
		return fmt.Errorf("waiting for session.created: %w", context.Cause(ctx))
	}
	if want, got := c.opts.SampleRate, c.session.SampleRate; want != 0 && got != 0 && want != got {
		return fmt.Errorf("%w: the server speaks %d Hz, the client %d Hz", ErrSampleRate, got, want)
	}
	return nil
}

// Ready is closed when session.created has arrived.
func (c *Conn) Ready() <-chan struct{} { return c.ready }

// Session is what session.created said; valid once Ready is closed.
func (c *Conn) Session() SessionInfo {
	select {
	case <-c.ready:
		return c.session
	default:
		return SessionInfo{}
	}
}

// Draining is closed when the first gateway.draining has arrived; Notice
// says what it held.
func (c *Conn) Draining() <-chan struct{} { return c.draining }

// Notice is the first gateway.draining; valid once Draining is closed.
func (c *Conn) Notice() Draining {
	select {
	case <-c.draining:
		return c.notice
	default:
		return Draining{}
	}
}

// Done is closed when the connection has ended and its reader returned.
func (c *Conn) Done() <-chan struct{} { return c.done }

// End says how the connection ended; it waits for Done.
func (c *Conn) End() End {
	<-c.done
	return c.end
}

// Echoed reports whether any audio came back on this connection.
func (c *Conn) Echoed() bool { return c.chunks.Load() > 0 }

// played reports whether every frame sent here was echoed.
func (c *Conn) played() bool { return c.framesEchoed.Load() >= c.framesSent.Load() }

// Messages the client sends besides audio.
var (
	commitMessage         = []byte(`{"type":"input_audio_buffer.commit"}`)
	responseCreateMessage = []byte(`{"type":"response.create"}`)
	manualTurnsMessage    = []byte(`{"type":"session.update","session":{"audio":{"input":{"turn_detection":null}}}}`)
	appendPrefix          = []byte(`{"type":"input_audio_buffer.append","audio":"`)
	jsonStringEnd         = []byte(`"}`)
)

// SendAudio sends pcm as one binary message or input_audio_buffer.append
// event, as the session's transport wants.
func (c *Conn) SendAudio(ctx context.Context, pcm []byte) error {
	return c.sendAudio(ctx, pcm, nil)
}

// sendAudio is SendAudio building a base64 event in *buf, reused.
func (c *Conn) sendAudio(ctx context.Context, pcm []byte, buf *[]byte) error {
	if c.binary.Load() {
		return c.ws.Write(ctx, websocket.MessageBinary, pcm)
	}
	var msg []byte
	if buf != nil {
		msg = (*buf)[:0]
	}
	msg = appendAudioEvent(msg, pcm)
	if buf != nil {
		*buf = msg
	}
	return c.ws.Write(ctx, websocket.MessageText, msg)
}

// sendAudioBounded is sendAudio for a Call: the write gets no context and
// is bounded by timeout instead, and a base64 event is built in *buf.
func (c *Conn) sendAudioBounded(pcm []byte, buf *[]byte, timeout time.Duration) error {
	if c.binary.Load() {
		return c.writeBounded(websocket.MessageBinary, pcm, timeout)
	}
	*buf = appendAudioEvent((*buf)[:0], pcm)
	return c.writeBounded(websocket.MessageText, *buf, timeout)
}

// commitBounded is Commit for a Call, each write bounded by timeout.
func (c *Conn) commitBounded(timeout time.Duration) error {
	if err := c.writeBounded(websocket.MessageText, commitMessage, timeout); err != nil || c.opts.PlainEcho {
		return err
	}
	return c.writeBounded(websocket.MessageText, responseCreateMessage, timeout)
}

// writeBounded writes msg and cuts the connection if that takes longer than
// timeout, as a write under a context with that deadline would, without
// allocating one. The ctx of a Call never cancels a write (writeContext
// used to strip it): a call hung up at the end of a run closes with 1000,
// not in the middle of a frame. One Call writes at a time on a Conn.
func (c *Conn) writeBounded(typ websocket.MessageType, msg []byte, timeout time.Duration) error {
	c.writeTimer.Reset(timeout)
	err := c.ws.Write(context.Background(), typ, msg)
	c.writeTimer.Stop()
	return err
}

// appendAudioEvent appends an input_audio_buffer.append event for pcm.
func appendAudioEvent(dst, pcm []byte) []byte {
	dst = append(dst, appendPrefix...)
	dst = base64.StdEncoding.AppendEncode(dst, pcm)
	return append(dst, jsonStringEnd...)
}

// Commit ends a turn: input_audio_buffer.commit, then response.create (the
// session runs with turn detection off, see Dial).
func (c *Conn) Commit(ctx context.Context) error {
	if err := c.ws.Write(ctx, websocket.MessageText, commitMessage); err != nil || c.opts.PlainEcho {
		return err
	}
	return c.ws.Write(ctx, websocket.MessageText, responseCreateMessage)
}

// Send sends one message as it is (an invalid event, an oversized one).
func (c *Conn) Send(ctx context.Context, typ websocket.MessageType, msg []byte) error {
	return c.ws.Write(ctx, typ, msg)
}

// Close hangs up with 1000 and waits for the reader to end.
func (c *Conn) Close() error {
	c.byClient.Store(true)
	err := c.ws.Close(websocket.StatusNormalClosure, "done")
	<-c.done
	return err
}

// CloseNow drops the connection without a close handshake and waits for
// the reader to end. It does nothing to a connection already closed.
func (c *Conn) CloseNow() {
	select {
	case <-c.done:
		return
	default:
	}
	if !c.byClient.Load() {
		c.cut.Store(true)
	}
	c.ws.CloseNow()
	<-c.done
}

// read runs on the connection's own goroutine until the connection ends.
// It reads without a context: a read cut by one would tear the connection
// down without a close handshake; Close and CloseNow end it instead.
func (c *Conn) read() {
	defer close(c.done)
	ctx := context.Background()
	buf := make([]byte, 0, 4096)
	pcm := make([]byte, 0, 2048)
	var err error
	for {
		var typ websocket.MessageType
		var r io.Reader
		if typ, r, err = c.ws.Reader(ctx); err != nil {
			break
		}
		if buf, err = readAll(r, buf[:0]); err != nil {
			break
		}
		if c.opts.ReadDelay > 0 {
			time.Sleep(c.opts.ReadDelay)
		}
		now := time.Now()
		if typ == websocket.MessageBinary {
			c.onAudio(buf, now)
			continue
		}
		typeName := eventType(buf)
		switch {
		case typeName == "response.output_audio.delta":
			pcm = decodeBase64Field(buf, `"delta":"`, pcm[:0])
			c.onAudio(pcm, now) // nil when not base64: an unframed chunk
			continue
		case typeName == "input_audio_buffer.append" && c.opts.PlainEcho:
			pcm = decodeBase64Field(buf, `"audio":"`, pcm[:0])
			c.onAudio(pcm, now)
			continue
		}
		c.onEvent(typeName, buf, now)
	}
	c.end = End{
		Code: websocket.CloseStatus(err), ByClient: c.byClient.Load(), Cut: c.cut.Load(),
		Err: err,
	}
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		c.end.Reason = ce.Reason
	}
	select {
	case <-c.ready:
		c.end.Ready = true
	default:
	}
	if c.opts.OnEnd != nil {
		c.opts.OnEnd(c.end)
	}
}

func (c *Conn) onAudio(chunk []byte, now time.Time) {
	c.chunks.Add(1)
	a := Audio{PCM: chunk, At: now}
	if h, err := DecodeFrame(chunk); err == nil {
		c.framesEchoed.Add(1)
		a.Framed, a.Frame, a.Due = true, h, h.SentAt
		if log := c.commits.Load(); log != nil && !c.opts.PlainEcho {
			if due, ok := log.due(h); ok && due > a.Due {
				a.Due = due
			}
		}
	}
	if c.opts.OnAudio != nil {
		c.opts.OnAudio(a)
	}
}

func (c *Conn) onEvent(typeName string, msg []byte, now time.Time) {
	ev := Event{Type: typeName, At: now, Raw: msg}
	switch typeName {
	case "session.created":
		var created struct {
			Gateway struct {
				SessionID       string `json:"session_id"`
				AudioTransport  string `json:"audio_transport"`
				SampleRate      int    `json:"sample_rate"`
				MaxMessageBytes int64  `json:"max_message_bytes"`
			} `json:"gateway"`
		}
		_ = json.Unmarshal(msg, &created)
		g := created.Gateway
		select {
		case <-c.ready: // a second one, or a plain echo's
		default:
			c.session = SessionInfo{ID: g.SessionID, AudioTransport: g.AudioTransport, SampleRate: g.SampleRate, MaxMessageBytes: g.MaxMessageBytes}
			if g.AudioTransport != "" {
				c.binary.Store(g.AudioTransport == "binary")
			}
			close(c.ready)
		}
	case "gateway.resumed":
		var r Resumed
		_ = json.Unmarshal(msg, &r)
		ev.Resumed = &r
	case "response.created":
		var r struct {
			Response struct {
				ID string `json:"id"`
			} `json:"response"`
		}
		_ = json.Unmarshal(msg, &r)
		if n, ok := strings.CutPrefix(r.Response.ID, "resp_"); ok {
			ev.ResponseNumber, _ = strconv.Atoi(n)
		}
	case "error":
		var e struct {
			Error ErrorInfo `json:"error"`
		}
		_ = json.Unmarshal(msg, &e)
		ev.Error = &e.Error
	case "gateway.draining":
		var d struct {
			ReconnectAfterMS int64     `json:"reconnect_after_ms"`
			Deadline         time.Time `json:"deadline"`
			Resume           string    `json:"resume"`
		}
		_ = json.Unmarshal(msg, &d)
		ev.Draining = &Draining{ReconnectAfter: time.Duration(d.ReconnectAfterMS) * time.Millisecond, Deadline: d.Deadline, At: now, Resume: d.Resume}
		select {
		case <-c.draining:
		default:
			c.notice = *ev.Draining
			defer close(c.draining) // after the hook: it sees the notice first
		}
	}
	if c.opts.OnEvent != nil {
		c.opts.OnEvent(ev)
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
// a load client reads hundreds of thousands of events a second and needs
// only a few of them. Every server event starts with its type.
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

// MintOptions say how to get a client token.
type MintOptions struct {
	// URL is the gateway's mint endpoint, http://host:port/v1/client_tokens.
	URL    string
	APIKey string
	// TTL is the token's lifetime; 0 leaves it to the server's default.
	TTL time.Duration
	// Binary fixes the binary audio transport for the session the token opens.
	Binary bool
	// HTTPClient sends the request; nil is one without keep-alives (each
	// mint a new connection, which a Service spreads over its pods).
	HTTPClient *http.Client
}

// MintToken exchanges an API key for a client token, as an app's backend
// does for a browser. A refusal is a *RefusedError.
func MintToken(ctx context.Context, opts MintOptions) (string, error) {
	var body struct {
		ExpiresIn int64             `json:"expires_in,omitempty"`
		Session   map[string]string `json:"session,omitempty"`
	}
	body.ExpiresIn = int64(opts.TTL / time.Second)
	if opts.Binary {
		body.Session = map[string]string{"audio": "binary"}
	}
	data, err := json.Marshal(body)
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, opts.URL, bytes.NewReader(data))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+opts.APIKey)
	req.Header.Set("Content-Type", "application/json")
	client := opts.HTTPClient
	if client == nil {
		client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", refusal(resp, fmt.Errorf("minting a client token: %s", resp.Status))
	}
	defer resp.Body.Close()
	var minted struct {
		Value string `json:"value"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<10)).Decode(&minted); err != nil || minted.Value == "" {
		return "", fmt.Errorf("minting a client token: no token in the answer (%v)", err)
	}
	return minted.Value, nil
}
