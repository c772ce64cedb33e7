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
	"github.com/voicegateway/voicegateway/server/protocol"
)

// Name is the backend's configured name.
const Name = "echo"

const (
	chunkDuration = 20 * time.Millisecond
	// maxBufferedSeconds bounds the input buffer and the queue of turns
	// waiting to be echoed, so a client cannot make the gateway hold
	// unbounded audio.
	maxBufferedSeconds = 60
	maxPendingTurns    = 32
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

type turn struct {
	itemID string
	audio  []byte
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

	// Reader-goroutine state.
	input      []byte
	lastItemID string
	lastAudio  []byte
	items      int
	responses  int

	mu       sync.Mutex
	pending  []turn
	speaking bool // a speaker goroutine is running
	queued   int  // bytes of audio in pending, bounded by maxBytes
	cancelID int  // bumped by response.cancel; the speaker drops its turn when it changes
}

func (c *conn) maxBytes() int { return c.info.SampleRate * 2 * maxBufferedSeconds }

// Handle implements backend.Conn.
func (c *conn) Handle(_ context.Context, ev *protocol.ClientEvent) *protocol.Error {
	switch ev.Type {
	case protocol.TypeSessionUpdate:
		return c.sessionUpdate(ev)
	case protocol.TypeInputAudioAppend:
		if len(c.input)+len(ev.Audio) > c.maxBytes() {
			return protocol.Invalid("audio", fmt.Sprintf("input audio buffer would exceed %d s; commit or clear it", maxBufferedSeconds))
		}
		c.input = append(c.input, ev.Audio...)
		return nil
	case protocol.TypeInputAudioClear:
		c.input = c.input[:0]
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
		audio := append([]byte(nil), c.input...)
		c.input = c.input[:0]
		c.lastItemID, c.lastAudio = itemID, audio
		if err := c.emit(&protocol.AudioCommitted{EventHeader: protocol.EventHeader{Type: protocol.TypeInputAudioCommitted}, PreviousItemID: previous, ItemID: itemID}); err != nil {
			return err
		}
		return c.enqueue(turn{itemID: itemID, audio: audio})
	case protocol.TypeResponseCreate:
		if c.lastAudio == nil {
			return protocol.Invalid("", "nothing to echo yet: commit audio first")
		}
		return c.enqueue(turn{itemID: c.lastItemID, audio: c.lastAudio})
	case protocol.TypeResponseCancel:
		c.mu.Lock()
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
		c.config.Instructions = *update.Instructions
	}
	return c.emit(&protocol.SessionEvent{EventHeader: protocol.EventHeader{Type: protocol.TypeSessionUpdated}, Session: c.config})
}

func (c *conn) enqueue(t turn) *protocol.Error {
	c.mu.Lock()
	if len(c.pending) >= maxPendingTurns || c.queued+len(t.audio) > c.maxBytes() {
		c.mu.Unlock()
		return protocol.Invalid("", "too many responses queued; wait for response.done or cancel")
	}
	c.pending = append(c.pending, t)
	c.queued += len(t.audio)
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
		c.queued -= len(t.audio)
		cancelID := c.cancelID
		c.mu.Unlock()
		if !c.play(t, cancelID) {
			c.mu.Lock()
			c.speaking = false
			c.mu.Unlock()
			return
		}
	}
}

// play sends one response, paced in real time with the first chunk at once.
// It returns false when the session is over.
func (c *conn) play(t turn, cancelID int) bool {
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
	for off := 0; off < len(t.audio); {
		if off > 0 {
			select {
			case <-c.ctx.Done():
				return false
			case <-ticker.C():
			}
		}
		due := (int(c.clock.Since(start)/chunkDuration) + 1) * chunk
		for ; off < len(t.audio) && (off == 0 || off < due); off += chunk {
			if c.cancelled(cancelID) {
				status = protocol.ResponseStatusCancelled
				break
			}
			end := min(off+chunk, len(t.audio))
			if c.sink.Audio(ref, t.audio[off:end]) != nil {
				return false
			}
		}
		if status == protocol.ResponseStatusCancelled {
			break
		}
	}
	seconds := float64(len(t.audio)) / float64(c.info.SampleRate*2)
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

// Close implements backend.Conn.
func (c *conn) Close() error {
	c.cancel()
	c.done.Wait()
	return nil
}
