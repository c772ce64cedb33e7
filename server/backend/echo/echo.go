// Package echo is the built-in backend: it answers each committed audio
// buffer with the same audio, paced in real time as 20 ms
// response.output_audio.delta chunks, plus a transcript. It needs no key and
// no network, so the whole gateway path can be exercised anywhere.
package echo

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/voicegateway/voicegateway/server/backend"
	"github.com/voicegateway/voicegateway/server/memory"
	"github.com/voicegateway/voicegateway/server/protocol"
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
	c := &conn{
		ctx:    ctx,
		cancel: cancel,
		clock:  b.clock,
		info:   info,
		sink:   sink,
		config: protocol.SessionConfig{
			Type:             "realtime",
			Object:           "realtime.session",
			ID:               info.SessionID,
			Model:            Name,
			OutputModalities: []string{"audio"},
			Audio: protocol.SessionAudio{
				Input:  protocol.SessionAudioDirection{Format: protocol.AudioFormat{Type: protocol.AudioFormatPCM, Rate: info.SampleRate}},
				Output: protocol.SessionAudioDirection{Format: protocol.AudioFormat{Type: protocol.AudioFormatPCM, Rate: info.SampleRate}},
			},
		},
	}
	transport := protocol.AudioTransportBase64
	if info.BinaryAudio {
		transport = protocol.AudioTransportBinary
	}
	err := sink.Event(&protocol.SessionEvent{
		EventHeader: protocol.EventHeader{Type: protocol.TypeSessionCreated},
		Session:     c.config,
		Gateway: &protocol.GatewayInfo{
			SessionID: info.SessionID, AudioTransport: transport,
			SampleRate: info.SampleRate, MaxMessageSize: info.MaxMessageBytes,
		},
	})
	if err != nil {
		cancel()
		return nil, err
	}
	return c, nil
}

// clip is one committed item's audio. The last item (kept for
// response.create) and each queued turn hold a reference; the audio's
// bytes stay charged to the session's memory account until the last
// reference goes. refs is guarded by conn.mu.
type clip struct {
	audio []byte
	refs  int
}

type turn struct {
	itemID string
	clip   *clip
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
	config protocol.SessionConfig
	done   sync.WaitGroup

	// Reader-goroutine state. input's capacity is charged to the memory
	// account (memory.Audio), and so is every clip's until it is dropped.
	input      []byte
	lastItemID string
	last       *clip // also changed under mu, where its references are counted
	items      int
	responses  int

	mu       sync.Mutex
	pending  []turn
	speaking bool // a speaker goroutine is running
	queued   int  // bytes of audio in pending, bounded by maxBytes
	cancelID int  // bumped by response.cancel; the speaker drops its turn when it changes
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
// its audio's memory back.
func (c *conn) unrefLocked(cl *clip) {
	if cl == nil {
		return
	}
	if cl.refs--; cl.refs == 0 {
		c.info.Memory.Release(memory.Audio, int64(cap(cl.audio)))
		cl.audio = nil
	}
}

// Handle implements backend.Conn.
func (c *conn) Handle(_ context.Context, ev *protocol.ClientEvent) *protocol.Error {
	switch ev.Type {
	case protocol.TypeSessionUpdate:
		return c.sessionUpdate(ev)
	case protocol.TypeInputAudioAppend:
		if len(ev.Audio)%2 != 0 {
			return protocol.Invalid("audio", "audio must be whole PCM16 samples (an even number of bytes)")
		}
		if len(c.input)+len(ev.Audio) > c.maxBytes() {
			return protocol.BufferFull("audio not buffered: the input audio buffer would hold more than " + c.maxAudio() + "; commit or clear it")
		}
		if err := c.grow(len(ev.Audio)); err != nil {
			return err
		}
		c.input = append(c.input, ev.Audio...)
		return nil
	case protocol.TypeInputAudioClear:
		c.dropInput()
		return c.emit(&protocol.AudioCleared{EventHeader: protocol.EventHeader{Type: protocol.TypeInputAudioCleared}})
	case protocol.TypeInputAudioCommit:
		if len(c.input) == 0 {
			return protocol.Invalid("", "input audio buffer is empty; append audio before committing")
		}
		c.items++
		itemID := "item_" + strconv.Itoa(c.items)
		var previous *string
		if c.lastItemID != "" {
			p := c.lastItemID
			previous = &p
		}
		// The input buffer becomes the item, with its memory: nothing is
		// copied.
		item := &clip{audio: c.input, refs: 1}
		c.input = nil
		c.mu.Lock()
		c.unrefLocked(c.last)
		c.last = item
		c.mu.Unlock()
		c.lastItemID = itemID
		if err := c.emit(&protocol.AudioCommitted{EventHeader: protocol.EventHeader{Type: protocol.TypeInputAudioCommitted}, PreviousItemID: previous, ItemID: itemID}); err != nil {
			return err
		}
		return c.enqueue(turn{itemID: itemID, clip: item})
	case protocol.TypeResponseCreate:
		if c.last == nil {
			return protocol.Invalid("", "nothing to echo yet: commit audio first")
		}
		return c.enqueue(turn{itemID: c.lastItemID, clip: c.last})
	case protocol.TypeResponseCancel:
		c.mu.Lock()
		for _, t := range c.pending {
			c.unrefLocked(t.clip)
		}
		clear(c.pending) // drop the audio, not just the length
		c.pending = c.pending[:0]
		c.queued = 0
		c.cancelID++
		c.mu.Unlock()
		return nil
	}
	return protocol.Invalid("type", "unknown event type "+strconv.Quote(ev.Type)+" for the echo backend")
}

func (c *conn) sessionUpdate(ev *protocol.ClientEvent) *protocol.Error {
	type direction struct {
		Format *protocol.AudioFormat `json:"format"`
	}
	var update struct {
		Instructions *string `json:"instructions"`
		Audio        *struct {
			Input  *direction `json:"input"`
			Output *direction `json:"output"`
		} `json:"audio"`
	}
	if err := json.Unmarshal(ev.Session, &update); err != nil {
		return protocol.Invalid("session", "session object has a field of the wrong type")
	}
	if update.Audio != nil {
		for _, d := range []*direction{update.Audio.Input, update.Audio.Output} {
			if d == nil || d.Format == nil {
				continue
			}
			f := d.Format
			if (f.Type != "" && f.Type != protocol.AudioFormatPCM) || (f.Rate != 0 && f.Rate != c.info.SampleRate) {
				return protocol.Invalid("session.audio", fmt.Sprintf("this gateway carries %s at %d Hz only", protocol.AudioFormatPCM, c.info.SampleRate))
			}
		}
	}
	if update.Instructions != nil {
		// The instructions are kept for the session (and repeated in every
		// session.updated): what they hold is charged to its account.
		grown := int64(len(*update.Instructions) - len(c.config.Instructions))
		if !c.info.Memory.Reserve(memory.Session, grown) {
			return protocol.BufferFull("session not updated: keeping these instructions would pass this server's memory budget; send shorter ones, or retry shortly")
		}
		c.info.Memory.Release(memory.Session, -grown)
		c.config.Instructions = *update.Instructions
	}
	return c.emit(&protocol.SessionEvent{EventHeader: protocol.EventHeader{Type: protocol.TypeSessionUpdated}, Session: c.config})
}

func (c *conn) enqueue(t turn) *protocol.Error {
	c.mu.Lock()
	if len(c.pending) >= maxPendingTurns || c.queued+len(t.clip.audio) > c.maxBytes() {
		c.mu.Unlock()
		return protocol.BufferFull("response not queued: " + strconv.Itoa(maxPendingTurns) + " responses or " + c.maxAudio() +
			" of audio wait to be played; wait for response.done or cancel")
	}
	t.clip.refs++
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

// speak plays queued turns one after another until none is left or the
// session ends. The decision to stop is taken under mu, where enqueue
// decides to start a speaker, so a turn is never left without one.
func (c *conn) speak() {
	defer c.done.Done()
	for {
		c.mu.Lock()
		if len(c.pending) == 0 || c.ctx.Err() != nil {
			c.speaking = false
			c.mu.Unlock()
			return
		}
		t := c.pending[0]
		c.pending[0] = turn{} // the backing array must not keep played audio alive
		c.pending = c.pending[1:]
		if len(c.pending) == 0 {
			c.pending = nil
		}
		c.queued -= len(t.clip.audio)
		cancelID := c.cancelID
		c.mu.Unlock()
		played := c.play(t, cancelID)
		c.mu.Lock()
		c.unrefLocked(t.clip)
		if !played {
			c.speaking = false
		}
		c.mu.Unlock()
		if !played {
			return
		}
	}
}

// play sends one response, paced in real time with the first chunk at once.
// It returns false when the session is over.
func (c *conn) play(t turn, cancelID int) bool {
	audio := t.clip.audio // the speaker's reference keeps it
	c.responses++
	ref := protocol.ContentRef{ResponseID: "resp_" + strconv.Itoa(c.responses), ItemID: t.itemID + "_echo"}
	if c.sink.Event(&protocol.ResponseEvent{EventHeader: protocol.EventHeader{Type: protocol.TypeResponseCreated}, Response: protocol.NewResponse(ref.ResponseID, protocol.ResponseStatusInProgress)}) != nil {
		return false
	}
	chunk := c.info.SampleRate * 2 * int(chunkDuration/time.Millisecond) / 1000
	// Chunks follow a fixed schedule from the response's start: chunk i
	// is due at i×20 ms. A ticker drops ticks when the core is busy, so on
	// each tick every chunk that is due goes out; a late tick is caught
	// up instead of delaying the rest of the response.
	start := c.clock.Now()
	ticker := c.clock.NewTicker(chunkDuration)
	defer ticker.Stop()
	status := protocol.ResponseStatusCompleted
	for off := 0; off < len(audio); {
		if off > 0 {
			select {
			case <-c.ctx.Done():
				return false
			case <-ticker.C():
			}
		}
		due := (int(c.clock.Since(start)/chunkDuration) + 1) * chunk
		for ; off < len(audio) && (off == 0 || off < due); off += chunk {
			if c.cancelled(cancelID) {
				status = protocol.ResponseStatusCancelled
				break
			}
			end := min(off+chunk, len(audio))
			if c.sink.Audio(ref, audio[off:end]) != nil {
				return false
			}
		}
		if status == protocol.ResponseStatusCancelled {
			break
		}
	}
	seconds := float64(len(audio)) / float64(c.info.SampleRate*2)
	transcript := fmt.Sprintf("(echo of %.2f s of audio)", seconds)
	events := []protocol.Event{
		&protocol.AudioDone{EventHeader: protocol.EventHeader{Type: protocol.TypeOutputAudioDone}, ContentRef: ref},
		&protocol.TranscriptDelta{EventHeader: protocol.EventHeader{Type: protocol.TypeOutputTranscriptDelta}, ContentRef: ref, Delta: transcript},
		&protocol.TranscriptDone{EventHeader: protocol.EventHeader{Type: protocol.TypeOutputTranscriptDone}, ContentRef: ref, Transcript: transcript},
		&protocol.ResponseEvent{EventHeader: protocol.EventHeader{Type: protocol.TypeResponseDone}, Response: protocol.NewResponse(ref.ResponseID, status)},
	}
	for _, ev := range events {
		if c.sink.Event(ev) != nil {
			return false
		}
	}
	return true
}

func (c *conn) cancelled(id int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cancelID != id
}

// Close implements backend.Conn: it stops the speaker and gives back the
// memory of every byte of audio and settings the connection held.
func (c *conn) Close() error {
	c.cancel()
	c.done.Wait()
	c.dropInput()
	c.info.Memory.Release(memory.Session, int64(len(c.config.Instructions)))
	c.config.Instructions = ""
	c.mu.Lock()
	for _, t := range c.pending {
		c.unrefLocked(t.clip)
	}
	c.pending = nil
	c.unrefLocked(c.last)
	c.last = nil
	c.mu.Unlock()
	return nil
}
