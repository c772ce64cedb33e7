package session

import (
	"io"
	"sync"

	"github.com/voicegateway/voicegateway/server/internal/msgbuf"
)

// coalescer sits between the WebSocket library's buffered writer and a
// session's connection. The library flushes every message with a system
// call of its own; a write to a TCP socket costs the same few microseconds
// whether it carries one frame or twelve, and on loopback it was the
// largest single item of a talking session's CPU. When the writer has
// several messages queued at once (the end of a response is seven events
// and the next one's opening four, pushed together), it holds them here and
// sends them with one write: they were all ready, so none waits for
// another. A lone message, an audio frame in the middle of a response,
// goes straight through as before.
//
// The held bytes live in a pooled buffer only while a batch is being
// written, so an idle session holds nothing here.
type coalescer struct {
	// next is the connection as the frame writer (hijack.go) writes it.
	next io.Writer

	mu      sync.Mutex
	holding bool
	held    *[]byte
}

func newCoalescer(next io.Writer) *coalescer { return &coalescer{next: next} }

// Write takes what the library flushes: held while a batch is being
// written, written to the connection otherwise. Writes from other
// goroutines (the library's pongs and close frames) are whole frames, so
// they never interleave with a batch's bytes; they are held with it when
// they come while it is being written.
func (c *coalescer) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.holding {
		if c.held == nil {
			c.held = msgbuf.Get(len(p))
		}
		*c.held = append(*c.held, p...)
		c.mu.Unlock()
		return len(p), nil
	}
	c.mu.Unlock()
	return c.next.Write(p)
}

// hold starts a batch: what is flushed from now on is held until send.
func (c *coalescer) hold() {
	c.mu.Lock()
	c.holding = true
	c.mu.Unlock()
}

// send ends the batch and writes what it held with one system call; the
// caller bounds the write with the connection's write deadline.
func (c *coalescer) send() error {
	c.mu.Lock()
	held := c.held
	c.holding, c.held = false, nil
	c.mu.Unlock()
	if held == nil {
		return nil
	}
	// Through the frame writer: a frame's start it holds from before
	// the batch (a pong begun on another goroutine) goes out first.
	_, err := c.next.Write(*held)
	msgbuf.Put(held)
	return err
}
