package voiceclient

import (
	"sync"
	"time"
)

// paceSlots is how many phases a Pacer's frame period is cut into: a call
// joins the slot whose tick is nearest its own start, so it sends at most
// FrameDuration/paceSlots late against a schedule of its own, and the
// calls of a run, started across a ramp, spread over the slots.
const paceSlots = 20

// Pacer sends the frames of many Calls (CallOptions.Pacer) from one
// goroutine per slot of the 20 ms frame period, where a Call of its own
// has a goroutine and a ticker: a thousand calls cost twenty timer wakeups
// per frame period instead of a thousand, and each wakeup sends a batch.
// A slot's calls share its goroutine, so a write that blocks holds back
// the calls of that slot only (up to their WriteTimeout).
//
// Close stops its goroutines; the calls must have stopped first.
type Pacer struct {
	base  time.Time // slot s ticks at base + s·period/paceSlots + k·period
	slots [paceSlots]paceSlot

	wg sync.WaitGroup
}

// paceSlot is one phase of the frame period and the calls paced in it.
type paceSlot struct {
	pacer *Pacer
	phase time.Duration // its offset in the period

	mu      sync.Mutex
	talks   []*paceEntry
	started bool
	closed  bool
	stop    chan struct{}
}

type paceEntry struct {
	call *Call
	talk *talk
}

// NewPacer returns a pacer whose goroutines start with the first call of
// each slot.
func NewPacer() *Pacer {
	p := &Pacer{base: time.Now()}
	for i := range p.slots {
		p.slots[i] = paceSlot{pacer: p, phase: time.Duration(i) * FrameDuration / paceSlots, stop: make(chan struct{})}
	}
	return p
}

// Close stops the pacer's goroutines and waits for them. Calls still
// joined stop being paced.
func (p *Pacer) Close() {
	for i := range p.slots {
		s := &p.slots[i]
		s.mu.Lock()
		if !s.closed {
			s.closed = true
			close(s.stop)
		}
		s.mu.Unlock()
	}
	p.wg.Wait()
}

// join adds call's schedule t to the slot that ticks first at or after
// due, and returns that tick: the schedule's first frame time.
func (p *Pacer) join(call *Call, t *talk, due time.Time) time.Time {
	period := FrameDuration
	step := period / paceSlots
	since := due.Sub(p.base)
	k := (since + step - 1) / step // the first slot tick not before due
	first := p.base.Add(k * step)
	s := &p.slots[int(k%paceSlots)]
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return first
	}
	t.slot, t.index = s, len(s.talks)
	s.talks = append(s.talks, &paceEntry{call: call, talk: t})
	if !s.started {
		s.started = true
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			s.run()
		}()
	}
	return first
}

// leave takes t off its slot, if it is still there; a tick in progress may
// still hold it, which Call.tick tells by t no longer being the call's
// schedule.
func (s *paceSlot) leave(t *talk) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := t.index
	if i >= len(s.talks) || s.talks[i].talk != t {
		return
	}
	last := len(s.talks) - 1
	s.talks[i] = s.talks[last]
	s.talks[i].talk.index = i
	s.talks[last] = nil
	s.talks = s.talks[:last]
}

// run ticks at the slot's phase of every period until the pacer closes,
// and on each tick sends what every call of the slot has due.
func (s *paceSlot) run() {
	period := FrameDuration
	// The next tick of this slot: base + phase + k·period, after now.
	elapsed := time.Since(s.pacer.base) - s.phase
	next := s.pacer.base.Add(s.phase + (elapsed/period+1)*period)
	timer := time.NewTimer(time.Until(next))
	defer timer.Stop()
	var batch []*paceEntry
	for {
		select {
		case <-s.stop:
			return
		case <-timer.C:
		}
		s.mu.Lock()
		batch = append(batch[:0], s.talks...)
		s.mu.Unlock()
		for i, e := range batch {
			if !e.call.tick(e.talk) {
				s.leave(e.talk)
			}
			batch[i] = nil
		}
		// The following tick; one missed (a starved process) is skipped,
		// and the calls send what fell due then on the next.
		next = next.Add(period)
		if now := time.Now(); next.Before(now) {
			next = next.Add((now.Sub(next)/period + 1) * period)
		}
		timer.Reset(time.Until(next))
	}
}
