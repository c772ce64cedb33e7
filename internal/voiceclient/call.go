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
	// Pacer, when set, sends the call's frames from its shared goroutines
	// instead of a goroutine and a ticker of the call's own: what a load
	// client with a thousand calls needs to stay cheaper than the server it
	// measures. The Pacer must outlive the call.
	Pacer *Pacer

	// OnFrame is called on the pacing goroutine after each frame is
	// written, with how late it went out against its place in the schedule.
	OnFrame func(h FrameHeader, lag time.Duration)
	// OnStall is called when the pacer fell more than a second behind (it
	// was starved of CPU) and skipped that many frames instead of bursting.
	OnStall func(skipped int)
}

// Call is one caller: it numbers frames and turns across its sessions,
// sends a frame every 20 ms on a fixed schedule to its current session, and
// moves to a new session make before break. Its frames are sent by a
// goroutine of its own, or by a shared Pacer's, from Start until Stop,
// Finish, Close or the end of the context given to Start; the goroutines
// closing sessions it moved away from are waited for by Finish and Close,
// one of which ends every Call.
type Call struct {
	opts CallOptions

	seq  atomic.Uint32 // the next frame's sequence number
	turn uint32        // the current turn; owned by the sender (or by Finish once it stopped)

	// send is held while a frame goes out and while the call starts, stops
	// or moves, so that none of those happens in the middle of a frame.
	// Lock order: send, then mu.
	send    sync.Mutex
	talking *talk // the running schedule; nil when not talking

	mu      sync.Mutex
	cur     *Conn
	old     *Conn // being left after a move
	oldAt   time.Time
	pending int // frames sent in the current turn, not committed yet
	closers sync.WaitGroup
}

// talk is one schedule of a call, from Start to its stop: frame k is due
// at first + k·20 ms, like audio from a microphone.
type talk struct {
	ctx   context.Context
	first time.Time
	sent  int    // frames of this schedule sent or skipped
	frame []byte // the tone; each frame's header is stamped over it in place
	msg   []byte // a base64 event, reused

	// With a Pacer: the slot that paces the call, and the call's place in it.
	slot  *paceSlot
	index int
	// Without one: the call's own goroutine's stop and end.
	stop, paced chan struct{}
}

// NewCall returns a call with no session yet.
func NewCall(opts CallOptions) *Call {
	if opts.MoveTimeout <= 0 {
		opts.MoveTimeout = 2 * time.Second
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 5 * time.Second
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
// Close or ctx's end. A schedule already running is stopped first; a turn
// it left open is never committed (a new session is a new conversation).
func (c *Call) Start(ctx context.Context, conn *Conn) {
	c.Stop()
	c.send.Lock()
	defer c.send.Unlock()
	c.mu.Lock()
	c.cur = conn
	c.turn++
	c.pending = 0
	c.mu.Unlock()
	t := &talk{ctx: ctx, frame: toneFrame(c.opts.SampleRate)}
	c.talking = t
	if c.opts.Pacer != nil {
		// The slot's next tick at least a frame from now: the first frame
		// is due 20 ms after Start, give or take the slot's millisecond.
		t.first = c.opts.Pacer.join(c, t, time.Now().Add(FrameDuration))
		return
	}
	t.first = time.Now().Add(FrameDuration) // taken before the ticker: its ticks are never earlier
	t.stop, t.paced = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(t.paced)
		c.paceAlone(t)
	}()
}

// Stop ends the schedule and waits for a frame in flight; the sessions
// stay open.
func (c *Call) Stop() {
	c.send.Lock()
	t := c.talking
	c.talking = nil
	c.send.Unlock()
	c.release(t)
}

// release lets go of a schedule already taken off the call: its slot, or
// its goroutine, which it waits for.
func (c *Call) release(t *talk) {
	switch {
	case t == nil:
	case t.slot != nil:
		t.slot.leave(t)
	default:
		close(t.stop)
		<-t.paced
	}
}

// errNotTalking is Move's answer when the call is not talking.
var errNotTalking = errors.New("voiceclient: the call is not talking")

// Move carries the call over to next, a session already open (make before
// break): the turn in progress is committed on the current session, frames
// go to next from the following one on, and the old session is closed with
// 1000 once next has echoed and the old one has played back every frame it
// was sent — or after MoveTimeout.
func (c *Call) Move(ctx context.Context, next *Conn) error {
	c.send.Lock()
	defer c.send.Unlock()
	t := c.talking
	if t == nil || t.ctx.Err() != nil {
		return errNotTalking
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	c.switchTo(t.ctx, next)
	return nil
}

// Finish ends the call politely: it stops the schedule, commits the turn in
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
		_ = c.commit(cur, pending)
	}
	deadline := time.Now().Add(settle)
	for _, conn := range []*Conn{old, cur} {
		for conn != nil && !conn.played() && !isDone(conn) && ctx.Err() == nil && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
	c.Close()
}

// Close stops the schedule, closes the call's sessions with 1000 and waits
// for everything the call started.
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

// paceAlone is the call's own goroutine when it has no Pacer: a ticker's
// tick sends what is due.
func (c *Call) paceAlone(t *talk) {
	ticker := time.NewTicker(FrameDuration)
	defer ticker.Stop()
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-t.stop:
			return
		case <-ticker.C:
			if !c.tick(t) {
				return
			}
		}
	}
}

// tick sends the frames of schedule t that are due. A sender that woke late
// sends what is due at once, as a client draining its capture buffer does;
// one more than a second behind (starved) skips ahead instead. It reports
// false when t is over (stopped, or its context ended).
func (c *Call) tick(t *talk) bool {
	c.send.Lock()
	defer c.send.Unlock()
	if c.talking != t {
		return false
	}
	if t.ctx.Err() != nil {
		c.talking = nil
		return false
	}
	now := time.Now()
	if now.Before(t.first) {
		return true // a shared slot's tick before the schedule's first frame
	}
	c.mu.Lock()
	cur, old := c.cur, c.old
	if old != nil && ((cur.Echoed() && old.played()) || now.Sub(c.oldAt) > c.opts.MoveTimeout || isDone(old)) {
		c.old = nil
		c.closeLater(old)
	}
	c.mu.Unlock()

	behind := int(now.Sub(t.first)/FrameDuration) + 1 - t.sent
	if behind <= 0 {
		return true
	}
	if isDone(cur) || cur.writeFailed.Load() {
		t.sent += behind // nothing goes out on a broken session, and nothing falls behind
		return true
	}
	if behind > FramesPerSecond {
		if c.opts.OnStall != nil {
			c.opts.OnStall(behind - 1)
		}
		t.sent += behind - 1
		behind = 1
	}
	for ; behind > 0 && !cur.writeFailed.Load(); behind-- {
		lag := max(time.Since(t.first.Add(time.Duration(t.sent)*FrameDuration)), 0)
		t.sent++
		if err := c.sendFrame(cur, t, lag); err != nil {
			// A failed write ends the connection (a broken one, or one
			// the library closed); its reader says why.
			cur.writeFailed.Store(true)
		}
	}
	return true
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
// still open is closed now). The caller holds c.send.
func (c *Call) switchTo(ctx context.Context, next *Conn) {
	c.mu.Lock()
	cur, prevOld, pending := c.cur, c.old, c.pending
	c.cur, c.old, c.pending, c.oldAt = next, cur, 0, time.Now()
	c.mu.Unlock()
	if prevOld != nil {
		c.closeLater(prevOld)
	}
	if pending > 0 && c.opts.CommitEvery > 0 {
		_ = c.commit(cur, pending)
		return
	}
	c.mu.Lock()
	c.turn++ // the next session's turns are new ones
	c.mu.Unlock()
}

// closeLater closes conn with 1000 on a goroutine of the call's, so that
// the sender goes on while the close handshake runs.
func (c *Call) closeLater(conn *Conn) {
	c.closers.Add(1)
	go func() {
		defer c.closers.Done()
		_ = conn.Close()
	}()
}

// sendFrame sends the call's next frame on conn, and a commit when one is
// due. The header is stamped over t's frame in place and the write carries
// no context of its own: nothing is allocated per frame.
func (c *Call) sendFrame(conn *Conn, t *talk, lag time.Duration) error {
	c.mu.Lock()
	h := FrameHeader{Seq: c.seq.Load(), SentAt: Elapsed(), Turn: c.turn, Index: uint32(c.pending)}
	c.mu.Unlock()
	EncodeFrame(t.frame, h)
	if err := conn.sendAudioBounded(t.frame, &t.msg, c.opts.WriteTimeout); err != nil {
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
		return c.commit(conn, n)
	}
	return nil
}

// commit ends the current turn of frames frames on conn. The echo backend
// plays one response at a time and queues the next (docs/protocol.md), so
// a turn committed while the previous one still plays starts when that one
// has played its last chunk; its frames are due from then.
func (c *Call) commit(conn *Conn, frames int) error {
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
	return conn.commitBounded(c.opts.WriteTimeout)
}
