package echo

import (
	"fmt"
	"time"

	"github.com/voicegateway/voicegateway/server/protocol"
)

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
		c.active = true
		c.mu.Unlock()
		played := c.play(t, cancelID)
		c.mu.Lock()
		c.active = false
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

// transcript is what the echo "says": the text it was given, or a note of
// how much audio it plays back.
func transcript(cl *clip) string {
	switch {
	case cl.text != "":
		return cl.text
	case len(cl.audio) == 0:
		return "(nothing to echo yet)"
	}
	return ""
}

// play sends one response with the GA API's event set, its audio paced in
// real time with the first chunk at once. It returns false when the
// session is over.
func (c *conn) play(t turn, cancelID int) bool {
	audio := t.clip.audio // the speaker's reference keeps it
	said := transcript(t.clip)
	if said == "" {
		said = fmt.Sprintf("(echo of %.2f s of audio)", float64(len(audio))/float64(c.info.SampleRate*2))
	}
	ref := protocol.ContentRef{ResponseID: t.responseID, ItemID: t.itemID}
	item := protocol.NewItem(t.itemID, protocol.RoleAssistant, protocol.ItemStatusInProgress)
	c.mu.Lock()
	previous := c.conv.add(item, c.info.Memory)
	c.mu.Unlock()
	empty := ""
	opening := []protocol.Event{
		&protocol.ResponseEvent{EventHeader: protocol.EventHeader{Type: protocol.TypeResponseCreated}, Response: protocol.NewResponse(t.responseID, protocol.ResponseStatusInProgress)},
		&protocol.OutputItemEvent{EventHeader: protocol.EventHeader{Type: protocol.TypeOutputItemAdded}, ResponseID: t.responseID, Item: item},
		&protocol.ItemEvent{EventHeader: protocol.EventHeader{Type: protocol.TypeItemAdded}, PreviousItemID: previous, Item: item},
		&protocol.ContentPartEvent{EventHeader: protocol.EventHeader{Type: protocol.TypeContentPartAdded}, ContentRef: ref,
			Part: protocol.ContentPart{Type: protocol.ContentPartAudio, Transcript: &empty}},
	}
	for _, ev := range opening {
		if c.sink.Event(ev) != nil {
			return false
		}
	}
	status := protocol.ResponseStatusCompleted
	if len(audio) > 0 {
		var ok bool
		if status, ok = c.playAudio(ref, audio, cancelID, t.queuedAt); !ok {
			return false
		}
	} else if c.cancelled(cancelID) {
		status = protocol.ResponseStatusCancelled
	}
	itemStatus := protocol.ItemStatusCompleted
	if status == protocol.ResponseStatusCancelled {
		itemStatus = protocol.ItemStatusIncomplete
	}
	item = protocol.NewItem(t.itemID, protocol.RoleAssistant, itemStatus,
		protocol.ContentPart{Type: protocol.ContentOutputAudio, Transcript: &said})
	c.mu.Lock()
	c.conv.update(item)
	c.mu.Unlock()
	response := protocol.NewResponse(t.responseID, status)
	response.Output = []any{item}
	closing := []protocol.Event{
		&protocol.AudioDone{EventHeader: protocol.EventHeader{Type: protocol.TypeOutputAudioDone}, ContentRef: ref},
		&protocol.TranscriptDelta{EventHeader: protocol.EventHeader{Type: protocol.TypeOutputTranscriptDelta}, ContentRef: ref, Delta: said},
		&protocol.TranscriptDone{EventHeader: protocol.EventHeader{Type: protocol.TypeOutputTranscriptDone}, ContentRef: ref, Transcript: said},
		&protocol.ContentPartEvent{EventHeader: protocol.EventHeader{Type: protocol.TypeContentPartDone}, ContentRef: ref,
			Part: protocol.ContentPart{Type: protocol.ContentPartAudio, Transcript: &said}},
		&protocol.OutputItemEvent{EventHeader: protocol.EventHeader{Type: protocol.TypeOutputItemDone}, ResponseID: t.responseID, Item: item},
		&protocol.ItemEvent{EventHeader: protocol.EventHeader{Type: protocol.TypeItemDone}, PreviousItemID: previous, Item: item},
		&protocol.ResponseEvent{EventHeader: protocol.EventHeader{Type: protocol.TypeResponseDone}, Response: response},
	}
	for _, ev := range closing {
		if c.sink.Event(ev) != nil {
			return false
		}
	}
	return true
}

// playAudio sends audio in 20 ms chunks on a fixed schedule from its start:
// chunk i is due at i×20 ms. A ticker drops ticks when the core is busy,
// so on each tick every chunk that is due goes out; a late tick is caught
// up instead of delaying the rest of the response. It returns the
// response's status, and false when the session is over.
func (c *conn) playAudio(ref protocol.ContentRef, audio []byte, cancelID int, queuedAt time.Time) (string, bool) {
	chunk := c.info.SampleRate * 2 * int(chunkDuration/time.Millisecond) / 1000
	// The audio is played to a schedule, as a speaker would play it: a
	// turn starts when it was queued or when the one before it ends,
	// whichever is later. A turn begun late (the machine was busy) sends
	// what is overdue at once and is back on time, rather than pushing
	// every later turn back by the delay: played from when it actually
	// began, each turn of a caller who talks in real time inherited the
	// one before's lateness, and one busy moment stayed in every echo
	// that followed.
	now := c.clock.Now()
	start := queuedAt
	if c.playedUntil.After(start) {
		start = c.playedUntil
	}
	if start.After(now) {
		start = now
	}
	c.playedUntil = start.Add(time.Duration(len(audio)) * time.Second / time.Duration(c.info.SampleRate*2))
	defer func() {
		if c.playedUntil.After(c.clock.Now()) && c.cancelled(cancelID) {
			// Cut short: what follows starts when it is queued.
			c.playedUntil = time.Time{}
		}
	}()
	ticker := c.clock.NewTicker(chunkDuration)
	defer ticker.Stop()
	for off := 0; off < len(audio); {
		if off > 0 {
			select {
			case <-c.ctx.Done():
				return "", false
			case <-ticker.C():
			}
		}
		due := (int(c.clock.Since(start)/chunkDuration) + 1) * chunk
		for ; off < len(audio) && (off == 0 || off < due); off += chunk {
			if c.cancelled(cancelID) {
				return protocol.ResponseStatusCancelled, true
			}
			end := min(off+chunk, len(audio))
			if c.sink.Audio(ref, audio[off:end]) != nil {
				return "", false
			}
		}
	}
	return protocol.ResponseStatusCompleted, true
}

func (c *conn) cancelled(id int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cancelID != id
}
