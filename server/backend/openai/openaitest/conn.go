package openaitest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Fault is trouble the server can be told to cause on a live connection.
type Fault int

const (
	// FaultClose closes the connection with 1011.
	FaultClose Fault = iota + 1
	// FaultDrop drops the connection without a close frame.
	FaultDrop
	// FaultStall goes silent: no more events and no pongs, though the
	// server keeps reading (and recording) what it is sent.
	FaultStall
	// FaultMalformed sends a text message that is not JSON.
	FaultMalformed
	// FaultBinary sends a binary message, which the API never does.
	FaultBinary
	// FaultOversized sends an event of Options.OversizedBytes.
	FaultOversized
	// FaultSessionExpired sends the session_expired error the API sends
	// at its maximum session duration, and keeps the connection open.
	FaultSessionExpired
	// FaultError sends an error event that does not end the session.
	FaultError
)

func (f Fault) String() string {
	switch f {
	case FaultClose:
		return "close"
	case FaultDrop:
		return "drop"
	case FaultStall:
		return "stall"
	case FaultMalformed:
		return "malformed"
	case FaultBinary:
		return "binary"
	case FaultOversized:
		return "oversized"
	case FaultSessionExpired:
		return "session_expired"
	case FaultError:
		return "error"
	}
	return "fault(" + strconv.Itoa(int(f)) + ")"
}

type command struct {
	fault Fault
	done  chan time.Time
}

// Conn is one accepted upstream connection.
type Conn struct {
	// Header and Query are those of the upgrade request.
	Header http.Header
	Query  url.Values

	srv      *Server
	ws       *websocket.Conn
	commands chan command
	done     chan struct{}
	stalled  atomic.Bool
	// deaf stops the main loop taking messages from the reader, which then
	// stops reading the socket; deafChanged wakes the loop to look again.
	deaf        atomic.Bool
	deafChanged chan struct{}

	mu          sync.Mutex
	received    []Received
	sent        []Sent
	closeStatus websocket.StatusCode
	changed     chan struct{}

	// Main-loop state.
	seq          int
	items        int
	responses    int
	session      map[string]any
	buffer       []byte
	lastItemID   string
	lastAudio    []byte
	appendedData []byte
	// scratch and out are StreamEcho's buffers, reused for every append.
	scratch, out []byte
	// transcribe is set by a session.update that configures input audio
	// transcription: each committed turn is then transcribed.
	transcribe bool

	// conversation is the conversation as this upstream holds it, in
	// order, under mu; responses records, for each response, the
	// conversation it answered from.
	conversation     []ConversationItem
	responseContexts [][]ConversationItem
}

// ConversationItem is one item of the conversation as the upstream holds
// it: its type, role, and text (a transcript, a text, a function call's
// name and arguments, a function output).
type ConversationItem struct {
	Type, Role, Text string
}

// Conversation is the conversation the upstream holds now, in order.
func (c *Conn) Conversation() []ConversationItem {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]ConversationItem(nil), c.conversation...)
}

// ResponseContexts lists, for each response this upstream produced, the
// conversation it answered from: what a real model would have "heard".
func (c *Conn) ResponseContexts() [][]ConversationItem {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]ConversationItem(nil), c.responseContexts...)
}

// remember adds an item to the conversation.
func (c *Conn) remember(item map[string]any) {
	if c.srv.opts.NoRecord {
		return
	}
	ci := ConversationItem{}
	ci.Type, _ = item["type"].(string)
	ci.Role, _ = item["role"].(string)
	switch ci.Type {
	case "function_call":
		name, _ := item["name"].(string)
		args, _ := item["arguments"].(string)
		ci.Text = name + args
	case "function_call_output":
		ci.Text, _ = item["output"].(string)
	default:
		parts, _ := item["content"].([]any)
		for _, p := range parts {
			part, _ := p.(map[string]any)
			for _, k := range []string{"text", "transcript"} {
				if t, ok := part[k].(string); ok {
					ci.Text += t
				}
			}
		}
	}
	c.mu.Lock()
	c.conversation = append(c.conversation, ci)
	c.mu.Unlock()
}

// Inject causes f on the connection and returns the moment it began (a
// close has begun once its frame is being written; Inject itself returns
// when the close handshake has ended, so the peer must be reading). It
// returns the zero time when the connection is already gone.
func (c *Conn) Inject(f Fault) time.Time {
	cmd := command{fault: f, done: make(chan time.Time, 1)}
	select {
	case c.commands <- cmd:
		return <-cmd.done
	case <-c.done:
		return time.Time{}
	}
}

// SetDeaf makes the connection stop reading, or read again: while deaf,
// nothing the client sends is read (data, pings, a close frame), so the
// client's writes back up as on an upstream process that is stuck. A deaf
// connection notices the client going only once it hears again.
func (c *Conn) SetDeaf(deaf bool) {
	c.deaf.Store(deaf)
	select {
	case c.deafChanged <- struct{}{}:
	default:
	}
}

// Done is closed when the connection has ended on the server's side.
func (c *Conn) Done() <-chan struct{} { return c.done }

// CloseStatus is the close code the client (the gateway) closed with, or
// -1 when the connection ended without one (dropped, or closed by the
// server first).
func (c *Conn) CloseStatus() websocket.StatusCode {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeStatus
}

// Received returns the client messages read so far.
func (c *Conn) Received() []Received {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Received(nil), c.received...)
}

// Sent returns the events written so far.
func (c *Conn) Sent() []Sent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Sent(nil), c.sent...)
}

// Appended returns all audio received in input_audio_buffer.append events.
func (c *Conn) Appended() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.appendedData...)
}

// WaitReceived waits until a client event of type typ has been read and
// returns the first one, or false after timeout.
func (c *Conn) WaitReceived(typ string, timeout time.Duration) (Received, bool) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		for _, r := range c.received {
			if r.Type == typ {
				c.mu.Unlock()
				return r, true
			}
		}
		if c.changed == nil {
			c.changed = make(chan struct{})
		}
		changed := c.changed
		c.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			return Received{}, false
		}
	}
}

func (c *Conn) notifyLocked() {
	if c.changed != nil {
		close(c.changed)
		c.changed = nil
	}
}

type message struct {
	typ  websocket.MessageType
	data []byte
}

// run serves the connection: a reader goroutine hands messages to this
// loop, which answers them and applies injected faults, until either side
// ends the connection or the server closes.
func (c *Conn) run(authorized bool) {
	in := make(chan message)
	stop := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			typ, data, err := c.ws.Read(context.Background())
			if err != nil {
				c.mu.Lock()
				c.closeStatus = websocket.CloseStatus(err)
				c.mu.Unlock()
				close(in)
				return
			}
			select {
			case in <- message{typ: typ, data: data}:
			case <-stop:
			}
		}
	}()
	defer func() {
		close(stop)
		_ = c.ws.CloseNow()
		<-readerDone
	}()

	if !authorized {
		c.send(map[string]any{"type": "error", "error": errorBody("invalid_request_error", "invalid_api_key",
			"Incorrect API key provided: sk-****************abcd.", nil, nil)})
		_ = c.ws.Close(3000, "invalid_request_error.invalid_api_key")
		return
	}
	c.session = map[string]any{
		"type": "realtime", "object": "realtime.session", "id": "sess_U" + strconv.FormatInt(time.Now().UnixNano(), 36),
		"model": c.Query.Get("model"), "output_modalities": []any{"audio"}, "instructions": "",
		"audio": map[string]any{
			"input":  map[string]any{"format": map[string]any{"type": "audio/pcm", "rate": SampleRate}, "turn_detection": nil},
			"output": map[string]any{"format": map[string]any{"type": "audio/pcm", "rate": SampleRate}, "voice": "alloy"},
		},
	}
	c.send(map[string]any{"type": "session.created", "session": c.session})
	for {
		hear := in
		if c.deaf.Load() {
			hear = nil // the reader blocks handing over what it read, and reads no more
		}
		select {
		case <-c.deafChanged:
		case m, ok := <-hear:
			if !ok {
				return
			}
			c.record(m)
			if !c.stalled.Load() {
				c.handle(m)
			}
		case cmd := <-c.commands:
			began := time.Now()
			ended := c.apply(cmd.fault)
			cmd.done <- began
			if ended {
				return
			}
		case <-c.srv.closing:
			return
		}
	}
}

func (c *Conn) record(m message) {
	if c.srv.opts.NoRecord {
		return
	}
	r := Received{Raw: m.data, Binary: m.typ == websocket.MessageBinary, At: time.Now()}
	var head struct {
		Type    string `json:"type"`
		EventID string `json:"event_id"`
		Audio   string `json:"audio"`
	}
	if !r.Binary && json.Unmarshal(m.data, &head) == nil {
		r.Type, r.EventID = head.Type, head.EventID
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.received = append(c.received, r)
	if head.Type == "input_audio_buffer.append" {
		if pcm, err := base64.StdEncoding.DecodeString(head.Audio); err == nil {
			c.appendedData = append(c.appendedData, pcm...)
		}
	}
	c.notifyLocked()
}

// apply causes a fault; it reports whether the connection is over.
func (c *Conn) apply(f Fault) bool {
	switch f {
	case FaultClose:
		_ = c.ws.Close(websocket.StatusInternalError, "internal error")
		return true
	case FaultDrop:
		_ = c.ws.CloseNow()
		return true
	case FaultStall:
		c.stalled.Store(true)
	case FaultMalformed:
		c.write(websocket.MessageText, []byte(`{"type":"response.output_audio.delta","delta":`))
	case FaultBinary:
		c.write(websocket.MessageBinary, []byte{0, 1, 2, 3})
	case FaultOversized:
		pad := strings.Repeat("x", c.srv.opts.OversizedBytes)
		c.send(map[string]any{"type": "conversation.item.retrieved", "item": map[string]any{"id": "item_big", "padding": pad}})
	case FaultSessionExpired:
		c.send(map[string]any{"type": "error", "error": errorBody("invalid_request_error", "session_expired",
			"Your session hit the maximum duration of 60 minutes.", nil, nil)})
	case FaultError:
		c.send(map[string]any{"type": "error", "error": errorBody("invalid_request_error", "invalid_value",
			"Invalid value for 'voice'.", "session.audio.output.voice", nil)})
	}
	return false
}

// send writes one server event with a fresh event_id.
func (c *Conn) send(ev map[string]any) {
	c.seq++
	id := "event_U" + strconv.Itoa(c.seq)
	ev["event_id"] = id
	data, err := json.Marshal(ev)
	if err != nil {
		panic(err)
	}
	if !c.srv.opts.NoRecord {
		c.mu.Lock()
		c.sent = append(c.sent, Sent{Type: ev["type"].(string), EventID: id, Raw: data, At: time.Now()})
		c.mu.Unlock()
	}
	c.write(websocket.MessageText, data)
}

func (c *Conn) write(typ websocket.MessageType, data []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = c.ws.Write(ctx, typ, data)
}

func (c *Conn) sendError(code, message string, param, eventID any) {
	c.send(map[string]any{"type": "error", "error": errorBody("invalid_request_error", code, message, param, eventID)})
}
