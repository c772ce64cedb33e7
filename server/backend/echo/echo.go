// Package echo is the built-in backend: it behaves like the OpenAI Realtime
// API with a model that says back what it heard. Server VAD (an energy
// detector honouring threshold, prefix_padding_ms, silence_duration_ms,
// create_response and interrupt_response) turns speech into committed
// items; each response echoes the latest user item's audio, paced in real
// time as 20 ms response.output_audio.delta chunks, with the GA API's full
// event set around it (docs/protocol.md lists it event by event). It needs
// no key and no network, so the whole gateway path can be exercised
// anywhere, by the official SDKs too.
package echo

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/utils/clock"

	"github.com/voicegateway/voicegateway/server/backend"
	"github.com/voicegateway/voicegateway/server/memory"
	"github.com/voicegateway/voicegateway/server/protocol"
	"github.com/voicegateway/voicegateway/server/resume"
)

// Name is the backend's configured name.
const Name = "echo"

const (
	chunkDuration = 20 * time.Millisecond
	// defaultMaxBuffered bounds the input buffer and the queue of turns
	// waiting to be echoed when the session sets no bound
	// (backend.Info.MaxBufferedBytes, --max-buffered-audio), so a client
	// cannot make the gateway hold unbounded audio.
	defaultMaxBuffered = 60 * time.Second
	maxPendingTurns    = 32
	// growStep is what the input buffer grows by at least: it holds at
	// most a quarter (and this much) more than the audio in it, and what
	// it holds is what the session's memory account is charged.
	growStep = 16 << 10
)

// Backend is the echo backend.
type Backend struct {
	clock clock.WithTicker
}

// New returns the echo backend using clk for pacing.
func New(clk clock.WithTicker) *Backend { return &Backend{clock: clk} }

// Name implements backend.Backend.
func (b *Backend) Name() string { return Name }

// Open implements backend.Backend.
func (b *Backend) Open(ctx context.Context, info backend.Info, sink backend.Sink) (backend.Conn, error) {
	ctx, cancel := context.WithCancel(ctx)
	model := Name
	if info.Model != "" {
		// Any model is "served": the echo stands in for whichever the
		// client's code names.
		model = info.Model
	}
	vad := defaultVAD
	c := &conn{
		ctx:    ctx,
		cancel: cancel,
		clock:  b.clock,
		info:   info,
		sink:   sink,
		model:  model,
		vad:    &vad,
		det:    newDetector(info.SampleRate, vad),
	}
	if st := info.Resume; st != nil && st.Backend == Name && st.Turns >= 0 && st.UserItems >= 0 {
		// The conversation continues: so do its ids.
		c.responses, c.userItems = int(min(st.Turns, maxResumedCount)), int(min(st.UserItems, maxResumedCount))
		c.counters.responses.Store(int64(c.responses))
		c.counters.userItems.Store(int64(c.userItems))
	}
	transport := protocol.AudioTransportBase64
	if info.BinaryAudio {
		transport = protocol.AudioTransportBinary
	}
	err := sink.Event(&protocol.SessionEvent{
		EventHeader: protocol.EventHeader{Type: protocol.TypeSessionCreated},
		Session:     c.sessionObject(),
		Gateway: &protocol.GatewayInfo{
			SessionID: info.SessionID, AudioTransport: transport,
			SampleRate: info.SampleRate, MaxMessageSize: info.MaxMessageBytes,
		},
	})
	if err == nil && info.Resume != nil {
		err = sink.Event(&protocol.ResumedEvent{EventHeader: protocol.EventHeader{Type: protocol.TypeGatewayResumed},
			SessionID: info.SessionID, Dropped: info.Resume.Dropped})
	}
	if err != nil {
		cancel()
		return nil, err
	}
	return c, nil
}

// maxResumedCount bounds the counters a resume handle sets.
const maxResumedCount = 1 << 40

var _ backend.Resumer = (*conn)(nil)

// ResumeState implements backend.Resumer: an echo's conversation is its
// counters.
func (c *conn) ResumeState() resume.State {
	return resume.State{Backend: Name, Turns: c.counters.responses.Load(), UserItems: c.counters.userItems.Load()}
}

// clip is what a response echoes: one user item's audio, or its text. The
// latest user item (kept for response.create) and each queued turn hold a
// reference; the audio's bytes stay charged to the session's memory account
// until the last reference goes. refs is guarded by conn.mu.
type clip struct {
	audio []byte
	text  string // a text item's text (its bytes charged like audio)
	refs  int
}

// turn is one response waiting to be played.
type turn struct {
	responseID string
	itemID     string // the assistant item the response adds
	clip       *clip
	queuedAt   time.Time
}

// conn is one session's echo. The reader goroutine calls Handle; a speaker
// goroutine, owned by conn and joined in Close, plays queued turns. It runs
// only while there is something to play, so an idle session costs no
// goroutine here.
type conn struct {
	ctx    context.Context
	cancel context.CancelFunc
	clock  clock.WithTicker
	info   backend.Info
	sink   backend.Sink
	model  string
	done   sync.WaitGroup

	// Reader-goroutine state. input's capacity is charged to the memory
	// account (memory.Audio), and so is every clip's until it is dropped.
	input        []byte
	instructions string // charged as memory.Session
	vad          *vadConfig
	det          detector
	userItems    int
	responses    int
	// counters mirror userItems and responses for ResumeState, which the
	// drain calls from its own goroutine.
	counters struct{ userItems, responses atomic.Int64 }

	mu       sync.Mutex
	last     *clip // the latest user item's content; its references are counted under mu
	pending  []turn
	speaking bool // a speaker goroutine is running
	active   bool // a response is being played
	queued   int  // bytes of audio in pending, bounded by maxBytes
	cancelID int  // bumped by response.cancel; the speaker drops its turn when it changes
	conv     conversation

	// playedUntil is when the audio played so far ends on the speaker's
	// schedule; only the speaker goroutine (one at a time) touches it.
	playedUntil time.Time
}

// maxBytes bounds the uncommitted input and, apart, the turns waiting to
// be played.
func (c *conn) maxBytes() int {
	if c.info.MaxBufferedBytes > 0 {
		return int(c.info.MaxBufferedBytes)
	}
	return c.info.SampleRate * 2 * int(defaultMaxBuffered/time.Second)
}

// maxAudio is maxBytes as a duration, for messages.
func (c *conn) maxAudio() string {
	return (time.Duration(c.maxBytes()) * time.Second / time.Duration(c.info.SampleRate*2)).Round(100 * time.Millisecond).String()
}

// grow makes room for n more bytes of input, charging what the buffer
// grows by to the session's memory account first.
func (c *conn) grow(n int) *protocol.Error {
	need := len(c.input) + n
	if need <= cap(c.input) {
		return nil
	}
	newCap := max(need, cap(c.input)+cap(c.input)/4)
	newCap = min((newCap+growStep-1)/growStep*growStep, max(need, c.maxBytes()))
	if !c.info.Memory.Reserve(memory.Audio, int64(newCap-cap(c.input))) {
		return protocol.BufferFull("audio not buffered: this server's memory budget is spent; commit or clear the input audio buffer, or retry shortly")
	}
	grown := make([]byte, len(c.input), newCap)
	copy(grown, c.input)
	c.input = grown
	return nil
}

// dropInput empties the input buffer and gives its memory back.
func (c *conn) dropInput() {
	c.info.Memory.Release(memory.Audio, int64(cap(c.input)))
	c.input = nil
}

// unrefLocked drops one reference to cl (with mu held); the last one gives
// its memory back.
func (c *conn) unrefLocked(cl *clip) {
	if cl == nil {
		return
	}
	if cl.refs--; cl.refs == 0 {
		c.info.Memory.Release(memory.Audio, int64(cap(cl.audio)+len(cl.text)))
		cl.audio, cl.text = nil, ""
	}
}

// setLast makes cl (one reference held by the caller) the latest user
// item's content.
func (c *conn) setLast(cl *clip) {
	c.mu.Lock()
	c.unrefLocked(c.last)
	c.last = cl
	c.mu.Unlock()
}

// Handle implements backend.Conn.
func (c *conn) Handle(_ context.Context, ev *protocol.ClientEvent) *protocol.Error {
	switch ev.Type {
	case protocol.TypeSessionUpdate:
		return c.sessionUpdate(ev)
	case protocol.TypeInputAudioAppend:
		return c.appendAudio(ev.Audio)
	case protocol.TypeInputAudioClear:
		c.dropInput()
		c.det.reset()
		return c.emit(&protocol.AudioCleared{EventHeader: protocol.EventHeader{Type: protocol.TypeInputAudioCleared}})
	case protocol.TypeInputAudioCommit:
		if len(c.input) == 0 {
			return protocol.Invalid("", "input audio buffer is empty; append audio before committing")
		}
		c.det.reset()
		return c.commit()
	case protocol.TypeResponseCreate:
		return c.respond()
	case protocol.TypeResponseCancel:
		if !c.cancelResponses() {
			return &protocol.Error{Code: protocol.CodeResponseCancelNotActive, Type: protocol.ErrorTypeInvalidRequest,
				Message: "Cancellation failed: no active response found."}
		}
		return nil
	case protocol.TypeItemCreate:
		return c.itemCreate(ev.Raw)
	case protocol.TypeItemRetrieve, protocol.TypeItemDelete, protocol.TypeItemTruncate:
		return c.itemByID(ev.Type, ev.Raw)
	}
	return protocol.Invalid("type", "unknown event type "+strconv.Quote(ev.Type)+" for the echo backend")
}

// appendAudio adds audio to the input buffer and runs turn detection over
// it: speech_started, and after enough quiet speech_stopped, a commit and
// (create_response) a response. Without speech, only the last
// prefix_padding_ms are kept, as the real API keeps no audio it will not
// commit.
func (c *conn) appendAudio(pcm []byte) *protocol.Error {
	if len(pcm)%2 != 0 {
		return protocol.Invalid("audio", "audio must be whole PCM16 samples (an even number of bytes)")
	}
	// Checked for the whole append before turn detection sees any of it,
	// so that refused audio leaves no trace.
	if len(c.input)+len(pcm) > c.maxBytes() {
		return protocol.BufferFull("audio not buffered: the input audio buffer would hold more than " + c.maxAudio() + "; commit or clear it")
	}
	for len(pcm) > 0 {
		n := len(pcm)
		var res vadResult
		if c.vad != nil {
			res, n = c.det.feed(pcm, *c.vad)
		}
		if err := c.grow(n); err != nil {
			return err
		}
		c.input = append(c.input, pcm[:n]...)
		pcm = pcm[n:]
		if res.started {
			if err := c.speechStarted(res.startMS); err != nil {
				return err
			}
		}
		if res.stopped {
			id := c.nextUserItemID()
			if err := c.emit(&protocol.SpeechEvent{EventHeader: protocol.EventHeader{Type: protocol.TypeSpeechStopped}, AudioEndMS: &res.endMS, ItemID: id}); err != nil {
				return err
			}
			if err := c.commit(); err != nil {
				return err
			}
			continue
		}
		if c.vad != nil && !c.det.speaking {
			c.trimToPadding()
		}
	}
	return nil
}

// speechStarted reports the start of speech and, with interrupt_response,
// cancels what is playing: the caller talks over the echo.
func (c *conn) speechStarted(startMS int64) *protocol.Error {
	if c.vad.InterruptResponse {
		c.cancelResponses()
	}
	return c.emit(&protocol.SpeechEvent{EventHeader: protocol.EventHeader{Type: protocol.TypeSpeechStarted}, AudioStartMS: &startMS, ItemID: c.nextUserItemID()})
}

// trimToPadding drops all but the last prefix_padding_ms of input: quiet
// audio before speech is never committed whole.
func (c *conn) trimToPadding() {
	keep := c.info.SampleRate * 2 * c.vad.PrefixPaddingMS / 1000
	keep -= keep % 2
	if drop := len(c.input) - keep; drop > 0 {
		n := copy(c.input, c.input[drop:])
		c.input = c.input[:n]
	}
}

func (c *conn) nextUserItemID() string { return "item_" + strconv.Itoa(c.userItems+1) }

// commit turns the input buffer into a user item: committed, then the
// item added and done; a response follows when turn detection is on with
// create_response. With turn detection off a commit only commits, and
// response.create answers.
func (c *conn) commit() *protocol.Error {
	c.userItems++
	c.counters.userItems.Store(int64(c.userItems))
	itemID := "item_" + strconv.Itoa(c.userItems)
	// The input buffer becomes the item, with its memory: nothing is
	// copied.
	cl := &clip{audio: c.input, refs: 1}
	c.input = nil
	c.setLast(cl)
	item := protocol.NewItem(itemID, protocol.RoleUser, protocol.ItemStatusCompleted,
		protocol.ContentPart{Type: protocol.ContentInputAudio})
	previous := c.addItem(item)
	if err := c.emit(&protocol.AudioCommitted{EventHeader: protocol.EventHeader{Type: protocol.TypeInputAudioCommitted}, PreviousItemID: previous, ItemID: itemID}); err != nil {
		return err
	}
	if err := c.emitItems(previous, item); err != nil {
		return err
	}
	if c.vad != nil && c.vad.CreateResponse {
		return c.respond()
	}
	return nil
}

// respond queues a response to the latest user item (an empty one when
// there is none yet, as the real API answers an empty conversation too).
func (c *conn) respond() *protocol.Error {
	c.mu.Lock()
	cl := c.last
	c.mu.Unlock()
	if cl == nil {
		cl = &clip{}
	}
	n := strconv.Itoa(c.responses + 1)
	if err := c.enqueue(turn{responseID: "resp_" + n, itemID: "item_echo_" + n, clip: cl}); err != nil {
		return err
	}
	c.responses++
	c.counters.responses.Store(int64(c.responses))
	return nil
}

// cancelResponses stops the response playing and drops the queued ones;
// it reports whether there was any.
func (c *conn) cancelResponses() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	any := c.active || len(c.pending) > 0
	for _, t := range c.pending {
		c.unrefLocked(t.clip)
	}
	clear(c.pending) // drop the audio, not just the length
	c.pending = c.pending[:0]
	c.queued = 0
	c.cancelID++
	return any
}

func (c *conn) enqueue(t turn) *protocol.Error {
	c.mu.Lock()
	if len(c.pending) >= maxPendingTurns || c.queued+len(t.clip.audio) > c.maxBytes() {
		c.mu.Unlock()
		return protocol.BufferFull("response not queued: " + strconv.Itoa(maxPendingTurns) + " responses or " + c.maxAudio() +
			" of audio wait to be played; wait for response.done or cancel")
	}
	t.clip.refs++
	t.queuedAt = c.clock.Now()
	c.pending = append(c.pending, t)
	c.queued += len(t.clip.audio)
	if !c.speaking && c.ctx.Err() == nil {
		c.speaking = true
		c.done.Add(1)
		go c.speak()
	}
	c.mu.Unlock()
	return nil
}

// emit sends an event from the reader goroutine; a closed session is not an
// error worth reporting back to it.
func (c *conn) emit(ev protocol.Event) *protocol.Error {
	if err := c.sink.Event(ev); err != nil && err != backend.ErrSessionClosed {
		return protocol.Fatal(protocol.CodeInternal, protocol.CloseInternalError, "could not queue event")
	}
	return nil
}

// Close implements backend.Conn: it stops the speaker and gives back the
// memory of every byte of audio and settings the connection held.
func (c *conn) Close() error {
	c.cancel()
	c.done.Wait()
	c.dropInput()
	c.info.Memory.Release(memory.Session, int64(len(c.instructions)))
	c.instructions = ""
	c.mu.Lock()
	for _, t := range c.pending {
		c.unrefLocked(t.clip)
	}
	c.pending = nil
	c.unrefLocked(c.last)
	c.last = nil
	c.conv.drop(c.info.Memory)
	c.mu.Unlock()
	return nil
}
