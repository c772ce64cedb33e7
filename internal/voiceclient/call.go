package voiceclient

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// CallOptions say how a Call talks.
type CallOptions struct {
	// SampleRate sets the frame size (20 ms of PCM16).
	SampleRate int
	// CommitEvery is the number of frames per input_audio_buffer.commit:
	// 50 is a 1 s turn; 0 never commits.
	CommitEvery int
	// WriteTimeout bounds each write; 0 means 5 s.
	WriteTimeout time.Duration
	// MoveTimeout is the longest a Move keeps the old session open waiting
	// for it to play back what it was sent and for the new one to echo
	// (default 2 s).
	MoveTimeout time.Duration

	// OnFrame is called on the pacer goroutine after each frame is written,
	// with how late it went out against its place in the schedule.
	OnFrame func(h FrameHeader, lag time.Duration)
	// OnStall is called when the pacer fell more than a second behind (it
	// was starved of CPU) and skipped that many frames instead of bursting.
	OnStall func(skipped int)
}

// Call is one caller: it numbers frames and turns across its sessions,
// sends a frame every 20 ms on a fixed schedule to its current session, and
// moves to a new session make before break. Its pacer goroutine ends with
// Stop, Finish, Close or the context given to Start; the goroutines closing
// sessions it moved away from are waited for by Finish and Close, one of
// which ends every Call.
type Call struct {
	opts CallOptions

	seq  atomic.Uint32 // the next frame's sequence number
	turn uint32        // the current turn; owned by the pacer (or by Finish once it stopped)

	mu      sync.Mutex
	cur     *Conn
	old     *Conn // being left after a move
	pending int   // frames sent in the current turn, not committed yet
	stop    chan struct{}
	moves   chan move
	paced   chan struct{} // closed when the pacer has returned
	closers sync.WaitGroup
}

type move struct {
	next *Conn
	done chan struct{}
}

// NewCall returns a call with no session yet.
func NewCall(opts CallOptions) *Call {
	if opts.MoveTimeout <= 0 {
		opts.MoveTimeout = 2 * time.Second
	}
	return &Call{opts: opts}
}

// Sent is the number of frames sent over the call's whole life.
func (c *Call) Sent() int64 { return int64(c.seq.Load()) }

// Conn is the session frames go to now.
func (c *Call) Conn() *Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur
}

// Start begins talking on conn, on a fresh schedule, until Stop, Finish,
// Close or ctx's end. A pacer already running is stopped first; a turn it
// left open is never committed (a new session is a new conversation).
func (c *Call) Start(ctx context.Context, conn *Conn) {
	c.Stop()
	c.mu.Lock()
	c.cur = conn
	c.turn++
	c.pending = 0
	c.stop = make(chan struct{})
	c.moves = make(chan move)
	c.paced = make(chan struct{})
	stop, moves, paced := c.stop, c.moves, c.paced
	c.mu.Unlock()
	go func() {
		defer close(paced)
		c.pace(ctx, stop, moves)
	}()
}

// Stop ends the pacer and waits for it; the sessions stay open.
func (c *Call) Stop() {
	c.mu.Lock()
	stop, paced := c.stop, c.paced
	c.stop = nil
	c.mu.Unlock()
	if stop == nil {
		return
	}
	close(stop)
	<-paced
}

// errNotTalking is Move's answer when no pacer runs.
var errNotTalking = errors.New("voiceclient: the call is not talking")

// Move carries the call over to next, a session already open (make before
// break): the turn in progress is committed on the current session, frames
// go to next from the following one on, and the old session is closed with
// 1000 once next has echoed and the old one has played back every frame it
// was sent — or after MoveTimeout.
func (c *Call) Move(ctx context.Context, next *Conn) error {
	c.mu.Lock()
	moves, paced := c.moves, c.paced
	running := c.stop != nil
	c.mu.Unlock()
	if !running {
		return errNotTalking
	}
	m := move{next: next, done: make(chan struct{})}
	select {
	case moves <- m:
	case <-paced:
		return errNotTalking
	case <-ctx.Done():
		return ctx.Err()
	}
	<-m.done
	return nil
}

// Finish ends the call politely: it stops the pacer, commits the turn in
// progress, waits up to settle for every session to play back the frames
// it was sent, and closes them with 1000.
func (c *Call) Finish(ctx context.Context, settle time.Duration) {
	c.Stop()
	c.mu.Lock()
	cur, old, pending := c.cur, c.old, c.pending
	c.pending = 0
	c.mu.Unlock()
	// A call that never commits (CommitEvery 0) talks to an upstream that
	// echoes each frame as it arrives: there is no turn to end.
	if cur != nil && pending > 0 && c.opts.CommitEvery > 0 {
		_ = c.commit(ctx, cur, pending)
	}
	deadline := time.Now().Add(settle)
	for _, conn := range []*Conn{old, cur} {
		for conn != nil && !conn.played() && !isDone(conn) && ctx.Err() == nil && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
	c.Close()
}

// Close stops the pacer, closes the call's sessions with 1000 and waits for
// everything the call started.
func (c *Call) Close() {
	c.Stop()
	c.mu.Lock()
	cur, old := c.cur, c.old
	c.old = nil
	c.mu.Unlock()
	for _, conn := range []*Conn{old, cur} {
		if conn != nil {
			_ = conn.Close()
		}
	}
	c.closers.Wait()
}

// pace sends the call's frames: frame k of this schedule is due at
// first + k·20 ms, like audio from a microphone. A pacer that woke late
// sends what is due at once, as a client draining its capture buffer does;
// one more than a second behind (starved) skips ahead instead.
func (c *Call) pace(ctx context.Context, stop <-chan struct{}, moves <-chan move) {
	frame := NewFrame(c.opts.SampleRate)
	var msg []byte
	first := time.Now().Add(FrameDuration) // taken before the ticker: its ticks are never earlier
	sent := 0
	ticker := time.NewTicker(FrameDuration)
	defer ticker.Stop()
	var oldSince time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-stop:
			return
		case m := <-moves:
			oldSince = time.Now()
			c.switchTo(ctx, m.next)
			close(m.done)
			continue
		case <-ticker.C:
		}
		now := time.Now()
		c.mu.Lock()
		cur, old := c.cur, c.old
		if old != nil && ((cur.Echoed() && old.played()) || now.Sub(oldSince) > c.opts.MoveTimeout || isDone(old)) {
			c.old = nil
			c.closeLater(old)
		}
		c.mu.Unlock()

		behind := int(now.Sub(first)/FrameDuration) + 1 - sent
		if isDone(cur) || cur.writeFailed.Load() {
			sent += behind // nothing goes out on a broken session, and nothing falls behind
			continue
		}
		if behind > FramesPerSecond {
			if c.opts.OnStall != nil {
				c.opts.OnStall(behind - 1)
			}
			sent += behind - 1
			behind = 1
		}
		for ; behind > 0 && !cur.writeFailed.Load(); behind-- {
			lag := max(time.Since(first.Add(time.Duration(sent)*FrameDuration)), 0)
			sent++
			if err := c.sendFrame(ctx, cur, frame, &msg, lag); err != nil {
				// A failed write ends the connection (a broken one, or one
				// the library closed); its reader says why.
				cur.writeFailed.Store(true)
			}
		}
	}
}

func isDone(conn *Conn) bool {
	select {
	case <-conn.done:
		return true
	default:
		return false
	}
}

// switchTo makes next the current session: the turn in progress is
// committed on the one being left, which becomes old (an earlier old one
// still open is closed now).
func (c *Call) switchTo(ctx context.Context, next *Conn) {
	c.mu.Lock()
	cur, prevOld, pending := c.cur, c.old, c.pending
	c.cur, c.old, c.pending = next, cur, 0
	c.mu.Unlock()
	if prevOld != nil {
		c.closeLater(prevOld)
	}
	if pending > 0 && c.opts.CommitEvery > 0 {
		_ = c.commit(ctx, cur, pending)
		return
	}
	c.mu.Lock()
	c.turn++ // the next session's turns are new ones
	c.mu.Unlock()
}

// closeLater closes conn with 1000 on a goroutine of the call's, so that
// the pacer goes on while the close handshake runs.
func (c *Call) closeLater(conn *Conn) {
	c.closers.Add(1)
	go func() {
		defer c.closers.Done()
		_ = conn.Close()
	}()
}

// sendFrame sends the call's next frame on conn, and a commit when one is due.
func (c *Call) sendFrame(ctx context.Context, conn *Conn, frame []byte, msg *[]byte, lag time.Duration) error {
	c.mu.Lock()
	h := FrameHeader{Seq: c.seq.Load(), SentAt: Elapsed(), Turn: c.turn, Index: uint32(c.pending)}
	c.mu.Unlock()
	EncodeFrame(frame, h)
	wctx, cancel := c.writeContext(ctx)
	err := conn.sendAudio(wctx, frame, msg)
	cancel()
	if err != nil {
		return err
	}
	c.seq.Add(1)
	conn.framesSent.Add(1)
	if c.opts.OnFrame != nil {
		c.opts.OnFrame(h, lag)
	}
	c.mu.Lock()
	c.pending++
	n := c.pending
	due := c.opts.CommitEvery > 0 && n >= c.opts.CommitEvery
	if due {
		c.pending = 0
	}
	c.mu.Unlock()
	if due {
		return c.commit(ctx, conn, n)
	}
	return nil
}

// commit ends the current turn of frames frames on conn. The echo backend
// plays one response at a time and queues the next (docs/protocol.md), so
// a turn committed while the previous one still plays starts when that one
// has played its last chunk; its frames are due from then.
func (c *Call) commit(ctx context.Context, conn *Conn, frames int) error {
	start := Elapsed()
	if conn.lastTurnFrames > 0 {
		start = max(start, conn.lastTurnStart+time.Duration(conn.lastTurnFrames-1)*FrameDuration)
	}
	conn.lastTurnStart, conn.lastTurnFrames = start, frames
	log := conn.commits.Load()
	if log == nil {
		log = &commitLog{}
		conn.commits.Store(log)
	}
	c.mu.Lock()
	log.record(c.turn, start)
	c.turn++
	c.mu.Unlock()
	wctx, cancel := c.writeContext(ctx)
	defer cancel()
	return conn.Commit(wctx)
}

// writeContext bounds one write by WriteTimeout only. The caller's ctx
// ending stops the pacer between writes, never inside one: coder/websocket
// closes the connection under a write whose context ends, and a call hung
// up at the end of a test would count as a broken connection instead of a
// client's 1000.
func (c *Call) writeContext(ctx context.Context) (context.Context, context.CancelFunc) {
	timeout := c.opts.WriteTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	return context.WithTimeout(context.WithoutCancel(ctx), timeout)
}
