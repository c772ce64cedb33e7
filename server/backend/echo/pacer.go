package echo

import (
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/voicegateway/voicegateway/server/protocol"
)

// paceTick is how often the pacer looks for chunks that are due: a chunk
// goes out at most this late.
const paceTick = time.Millisecond

// paceSlots are the pacer's slots: chunks come every chunkDuration, so a
// playback due at some millisecond is due again in the same slot.
const paceSlots = int(chunkDuration / paceTick)

// pacer plays the audio of every speaking session of a backend from one
// goroutine, on one ticker. A ticker and a goroutine wake-up per session
// for every 20 ms chunk were a measurable share of a talking session's
// CPU; here each tick sends whatever chunks fell due in the milliseconds
// since the last one, for every session. A playback sits in the slot of
// the millisecond its chunks fall due in, so a tick visits only the
// sessions it has work for. The goroutine runs only while something plays.
type pacer struct {
	clock clock.WithTicker

	mu    sync.Mutex
	slots [paceSlots][]*playback
	count int
	// last is the millisecond up to which the slots were visited.
	last int64
	// running is set while the loop goroutine runs; exited is closed when
	// it returns (a closed channel when none ever ran).
	running bool
	exited  chan struct{}
	// wake ends the loop's wait for its next tick when the last playback
	// left, so that it exits at once.
	wake chan struct{}
	// scratch is the loop's: the slot being visited.
	scratch []*playback
}

func newPacer(clk clock.WithTicker) *pacer {
	exited := make(chan struct{})
	close(exited)
	return &pacer{clock: clk, exited: exited, wake: make(chan struct{}, 1)}
}

// playback is one response's audio being played: chunk i (from off on) is
// due at start + i×chunkDuration.
type playback struct {
	c        *conn
	ref      protocol.ContentRef
	audio    []byte
	chunk    int
	off      int
	start    time.Time
	cancelID int
	slot     int
	// result has room for the one answer the speaker waits for.
	result chan playResult
}

type playResult struct {
	status string
	ok     bool
}

// millis is t in whole milliseconds, rounded up: the first tick at which
// what is due at t may go out.
func millis(t time.Time) int64 {
	ns := t.UnixNano()
	ms := ns / int64(paceTick)
	if ns%int64(paceTick) > 0 {
		ms++
	}
	return ms
}

// play sends what of pb is due now and, unless that was all of it (or
// the session is over), leaves the rest to the loop: its answer then comes
// on pb.result. Both happen under mu, after the loop's last visit, so no
// chunk due before the loop's next visit can be missed.
func (p *pacer) play(pb *playback) (playResult, bool) {
	pb.slot = int(millis(pb.start) % int64(paceSlots))
	p.mu.Lock()
	defer p.mu.Unlock()
	if r, done := pb.advance(p.clock.Now()); done {
		return r, true
	}
	p.slots[pb.slot] = append(p.slots[pb.slot], pb)
	p.count++
	if !p.running {
		p.running = true
		p.exited = make(chan struct{})
		p.last = millis(p.clock.Now()) - 1
		select {
		case <-p.wake: // a wake-up meant for a loop that exited
		default:
		}
		go p.loop(p.clock.NewTicker(paceTick), p.exited)
	}
	return playResult{}, false
}

// remove stops pb if it still plays (its session ended); nothing is sent
// for it once remove returns.
func (p *pacer) remove(pb *playback) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.removeLocked(pb)
}

func (p *pacer) removeLocked(pb *playback) {
	s := p.slots[pb.slot]
	for i, q := range s {
		if q == pb {
			s[i] = s[len(s)-1]
			s[len(s)-1] = nil
			p.slots[pb.slot] = s[:len(s)-1]
			p.count--
			if p.count == 0 {
				select {
				case p.wake <- struct{}{}:
				default:
				}
			}
			return
		}
	}
}

// quiesce waits for the loop to exit if nothing plays: a closed session
// leaves no goroutine behind, whichever of the pacer's sessions ends last.
func (p *pacer) quiesce() {
	p.mu.Lock()
	exited := p.exited
	idle := p.count == 0
	p.mu.Unlock()
	if idle {
		<-exited
	}
}

func (p *pacer) loop(ticker clock.Ticker, exited chan struct{}) {
	defer close(exited)
	defer ticker.Stop()
	for {
		select {
		case <-ticker.C():
		case <-p.wake:
		}
		p.mu.Lock()
		if p.count > 0 {
			p.visit(p.clock.Now())
		}
		if p.count == 0 {
			p.running = false
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
	}
}

// visit sends what fell due in the slots of the milliseconds since the
// last visit (all of them after a stall), with mu held: a playback is
// never touched after remove.
func (p *pacer) visit(now time.Time) {
	nowMs := now.UnixNano() / int64(paceTick)
	from := max(p.last+1, nowMs-int64(paceSlots)+1)
	for ms := from; ms <= nowMs; ms++ {
		slot := int(ms % int64(paceSlots))
		// The slot may shrink while it is visited: visit a copy.
		p.scratch = append(p.scratch[:0], p.slots[slot]...)
		for _, pb := range p.scratch {
			if r, done := pb.advance(now); done {
				p.removeLocked(pb)
				pb.result <- r
			}
		}
	}
	clear(p.scratch)
	p.last = max(p.last, nowMs)
}

// advance sends every chunk of pb that is due at now, and reports when the
// playback is over and how it ended.
func (pb *playback) advance(now time.Time) (playResult, bool) {
	due := (int(now.Sub(pb.start)/chunkDuration) + 1) * pb.chunk
	for ; pb.off < len(pb.audio) && pb.off < due; pb.off += pb.chunk {
		if pb.c.cancelled(pb.cancelID) {
			return playResult{status: protocol.ResponseStatusCancelled, ok: true}, true
		}
		end := min(pb.off+pb.chunk, len(pb.audio))
		if pb.c.sink.Audio(pb.ref, pb.audio[pb.off:end]) != nil {
			return playResult{}, true
		}
	}
	if pb.off >= len(pb.audio) {
		return playResult{status: protocol.ResponseStatusCompleted, ok: true}, true
	}
	return playResult{}, false
}
