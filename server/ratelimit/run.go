package ratelimit

import (
	"context"

	"github.com/voicegateway/voicegateway/server/internal/ticker"
)

// Run sweeps expired entries every CleanupInterval until ctx is done, then
// returns nil. It is the Limiter's only background work, and it runs in the
// caller's goroutine so the caller owns it and can wait for it. The ticker
// is stopped on every return path.
//
// Sweeping only gives memory back: expired entries already read as Allow.
// A second Run while one is going returns ErrAlreadyRunning.
func (l *Limiter) Run(ctx context.Context) error {
	if !l.running.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	defer l.running.Store(false)

	t := ticker.New(l.clk, l.cfg.CleanupInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
			l.sweep()
			t.Ticked()
		}
	}
}

// sweep drops idle entries, one shard at a time so Checks on other shards
// never wait for it.
func (l *Limiter) sweep() {
	now := l.now()
	nowSlot := slotOf(now, l.slotWidth)
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		for k, e := range s.entries {
			if s.idleAt(k, &e, now, nowSlot) {
				s.remove(k)
			}
		}
		// A Go map keeps the buckets it grew to. Once a flood is gone,
		// copy the survivors into a right-sized map so its memory is
		// returned too.
		if n := len(s.entries); s.peak >= shrinkAbove && n < s.peak/4 {
			fresh := make(map[key]entry, n)
			for k, e := range s.entries {
				fresh[k] = e
			}
			s.entries = fresh
			s.peak = n
			if s.peers != nil {
				peers := make(map[key]peerCounts, len(s.peers))
				for k, p := range s.peers {
					peers[k] = p
				}
				s.peers = peers
			}
		}
		s.size.Store(int64(len(s.entries)))
		s.mu.Unlock()
	}
}
