package ratelimit

import (
	"net/netip"
	"time"
)

// Replication: the replicas of a fleet share one limiter state (server/cluster
// carries it; docs/design.md, "Fleet decisions", explains the choices).
//
// What is replicated, and how it merges whatever the order or the number of
// times an update arrives:
//
//   - blockedUntil and suspiciousUntil, as wall-clock times merged by
//     maximum: a block decided anywhere holds everywhere, and applying an
//     update twice changes nothing;
//   - failures, as one counter ring per origin (the replica that saw them):
//     a grow-only counter per (origin, slot), merged by maximum per slot and
//     summed over origins. An update that arrives twice, or a full state that
//     repeats what a broadcast said, is never counted twice; failures seen by
//     different replicas always add up.
//
// Each replica is the only writer of its own origin's counters, so it never
// takes its own origin from a peer. Slots are numbered on the wall clock
// (Unix nanoseconds divided by the slot width), so that replicas started at
// different times number them alike; a replica maps them onto its own
// monotonic slots with a fixed offset taken at New, so a remote failure's
// expiry is known to within one slot (Window/7).
//
// The local Check path is untouched: it still reads only blockedUntil and
// suspiciousUntil of one entry. Other replicas' counters live in a second
// map per shard, next to the entries, holding only IPs that are in the
// entries map too, so the same MaxTracked cap and eviction rule bound both.

// MaxOrigins is how many other replicas' counters are kept per IP. With
// more origins contributing failures for one IP within one window (a fleet
// of more than MaxOrigins+1 replicas, or a rollout of a large one), the
// origin whose newest failure is oldest is forgotten: the count may then be
// low, never high, and a block decided anywhere still spreads.
const MaxOrigins = 4

// SlotCount is the number of slots of a failure counter ring.
const SlotCount = slotCount

// Origin identifies the replica that counted failures; 0 is no origin.
type Origin uint64

// Counter is one origin's failures for one IP: a ring of per-slot counts
// whose newest slot is NewestSlot, numbered on the wall clock. Slots[s %
// SlotCount] counts slot s, for s in (NewestSlot-SlotCount, NewestSlot].
type Counter struct {
	Origin     Origin
	NewestSlot int64
	Slots      [SlotCount]uint16
}

// Record is one IP's replicated state. Times are Unix nanoseconds on the
// wall clock, 0 for none.
type Record struct {
	IP              netip.Addr
	BlockedUntil    int64
	SuspiciousUntil int64
	Counters        []Counter
}

// Change is what a failure or a merge changed for one IP, in the form that
// is sent to the other replicas: the local origin's counter and the times.
// It holds no pointer, so reporting it allocates nothing.
type Change struct {
	IP              netip.Addr
	BlockedUntil    int64
	SuspiciousUntil int64
	Own             Counter
	// Blocked is true when this change started a block here.
	Blocked bool
}

// peerCounter is another replica's ring for one IP, in local slots.
type peerCounter struct {
	origin     Origin
	newestSlot int64
	slots      [slotCount]uint16
}

// peerCounts holds up to MaxOrigins rings; a zero origin marks a free one.
type peerCounts [MaxOrigins]peerCounter

// Replicate makes l report every change of its state to observe, with
// origin as the local replica's identity. It must be called before l is
// used; observe runs outside the limiter's locks and must not block.
func (l *Limiter) Replicate(origin Origin, observe func(Change)) {
	l.origin = origin
	l.observe = observe
}

// ringAt is the count of slot s in a ring whose newest slot is newest.
func ringAt(slots *[slotCount]uint16, newest, s int64) int {
	if s > newest || s <= newest-slotCount {
		return 0
	}
	return int(slots[s&slotMask])
}

// mergeRing folds ring b into ring a, slot by slot, by maximum.
func mergeRing(aSlots *[slotCount]uint16, aNewest *int64, bSlots *[slotCount]uint16, bNewest int64) {
	top := max(*aNewest, bNewest)
	var out [slotCount]uint16
	for s := top - slotCount + 1; s <= top; s++ {
		out[s&slotMask] = uint16(max(ringAt(aSlots, *aNewest, s), ringAt(bSlots, bNewest, s)))
	}
	*aSlots, *aNewest = out, top
}

// combined returns e's ring with the peers' rings added, as an entry whose
// failures and belowAt answer for the fleet.
func combined(e *entry, p *peerCounts, nowSlot int64) entry {
	top := max(nowSlot, e.newestSlot)
	for i := range p {
		if p[i].origin != 0 {
			top = max(top, p[i].newestSlot)
		}
	}
	c := entry{newestSlot: top}
	for s := top - slotCount + 1; s <= top; s++ {
		sum := ringAt(&e.slots, e.newestSlot, s)
		for i := range p {
			if p[i].origin != 0 {
				sum += ringAt(&p[i].slots, p[i].newestSlot, s)
			}
		}
		c.slots[s&slotMask] = uint16(min(sum, maxThreshold))
	}
	return c
}

// failures is the failures in c still inside the window at nowSlot.
func (c *peerCounter) failures(nowSlot int64) int {
	e := entry{newestSlot: c.newestSlot, slots: c.slots}
	return e.failures(nowSlot)
}

// failures is the failures in p still inside the window at nowSlot.
func (p *peerCounts) failures(nowSlot int64) int {
	n := 0
	for i := range p {
		if p[i].origin != 0 {
			n += p[i].failures(nowSlot)
		}
	}
	return n
}

// fleetFailures is k's failure count over every replica known here. mu must
// be held.
func (s *shard) fleetFailures(k key, e *entry, nowSlot int64) (int, *peerCounts) {
	n := e.failures(nowSlot)
	if len(s.peers) == 0 {
		return n, nil
	}
	p, ok := s.peers[k]
	if !ok {
		return n, nil
	}
	return n + p.failures(nowSlot), &p
}

// idleAt is e.idle that also counts other replicas' failures. mu must be held.
func (s *shard) idleAt(k key, e *entry, now, nowSlot int64) bool {
	if !e.idle(now, nowSlot) {
		return false
	}
	if len(s.peers) == 0 {
		return true
	}
	p, ok := s.peers[k]
	return !ok || p.failures(nowSlot) == 0
}

// remove drops k and its peers' counters. mu must be held.
func (s *shard) remove(k key) {
	delete(s.entries, k)
	if len(s.peers) > 0 {
		delete(s.peers, k)
	}
}

// wallTime converts a local time to Unix nanoseconds, given the same
// instant in both (0 stays 0, and a time already past becomes 0).
func wallTime(local, now, wallNow int64) int64 {
	if local <= now {
		return 0
	}
	return wallNow + (local - now)
}

// instant is one reading of the clock as a local time (since base) and as
// Unix nanoseconds.
func (l *Limiter) instant() (now, wallNow int64) {
	t := l.clk.Now()
	return int64(t.Sub(l.base)), t.UnixNano()
}

// change builds the Change for e. wallNow and now are one instant.
func (l *Limiter) change(k key, e *entry, now, wallNow int64, blocked bool) Change {
	return Change{
		IP:              k.addr(),
		BlockedUntil:    wallTime(e.blockedUntil, now, wallNow),
		SuspiciousUntil: wallTime(e.suspiciousUntil, now, wallNow),
		Own:             Counter{Origin: l.origin, NewestSlot: e.newestSlot + l.slotShift, Slots: e.slots},
		Blocked:         blocked,
	}
}

// Merge folds a record from another replica into the table and reports
// whether the IP is held after it. It follows the rules above, and those
// of Import for what cannot be trusted: times are clamped to BlockDuration
// (blocks) and the window's span (suspicion) from now, counters of the local
// origin and counters entirely outside the window are ignored, and a
// record with nothing live in it adds nothing.
//
// Unlike Import, a merge of a new IP into a full shard evicts, by the same
// rule as Failure: a block decided on another replica matters as much as
// one decided here, and the rule never lets unblocked newcomers push out a
// block. When the merged counts reach BlockAfter and the IP was not blocked,
// the block starts here and is reported to observe like a local one.
func (l *Limiter) Merge(r *Record) bool {
	now, wallNow := l.instant()
	nowSlot := slotOf(now, l.slotWidth)

	var in entry
	if r.BlockedUntil > wallNow {
		in.blockedUntil = now + min(r.BlockedUntil-wallNow, int64(l.cfg.BlockDuration))
	}
	if r.SuspiciousUntil > wallNow {
		in.suspiciousUntil = now + min(r.SuspiciousUntil-wallNow, slotCount*l.slotWidth)
	}
	var live [MaxOrigins + 1]peerCounter
	nLive := 0
	for i := range r.Counters {
		c := &r.Counters[i]
		if c.Origin == 0 || c.Origin == l.origin || nLive == len(live) {
			continue
		}
		// Compared on the wall-clock numbering first, so that no value
		// from the wire can overflow the shift: a ring that ended before
		// the window holds nothing, one from the future (clock skew)
		// counts as ending now.
		wallNowSlot := nowSlot + l.slotShift
		if c.NewestSlot <= wallNowSlot-slotCount {
			continue
		}
		pc := peerCounter{origin: c.Origin, newestSlot: min(c.NewestSlot, wallNowSlot) - l.slotShift, slots: c.Slots}
		if pc.failures(nowSlot) == 0 {
			continue
		}
		live[nLive] = pc
		nLive++
	}
	if in.blockedUntil == 0 && in.suspiciousUntil == 0 && nLive == 0 {
		return false
	}

	k := keyOf(r.IP)
	s := l.shardFor(k)
	s.mu.Lock()
	e, ok := s.entries[k]
	if !ok {
		if len(s.entries) >= s.capacity {
			s.evictOne(now, nowSlot)
			if len(s.entries) >= s.capacity {
				s.mu.Unlock()
				return false
			}
		}
		e = entry{newestSlot: nowSlot}
	}
	e.blockedUntil = max(e.blockedUntil, in.blockedUntil)
	e.suspiciousUntil = max(e.suspiciousUntil, in.suspiciousUntil)
	blocked := false
	if nLive > 0 {
		if s.peers == nil {
			s.peers = make(map[key]peerCounts)
		}
		p := s.peers[k]
		for i := range nLive {
			p.merge(&live[i])
		}
		s.peers[k] = p
		c := combined(&e, &p, nowSlot)
		if c.failures(nowSlot) >= l.cfg.BlockAfter && now >= e.blockedUntil {
			e.blockedUntil = now + int64(l.cfg.BlockDuration)
			s.blocksTotal++
			blocked = true
		}
		if until := c.belowAt(nowSlot, l.cfg.SuspiciousAfter, l.slotWidth); until > e.suspiciousUntil {
			e.suspiciousUntil = until
		}
	}
	s.put(k, e)
	var ch Change
	if blocked && l.observe != nil {
		ch = l.change(k, &e, now, wallNow, true)
	}
	s.mu.Unlock()
	if blocked && l.observe != nil {
		l.observe(ch)
	}
	return true
}

// merge folds c into p: into the ring of the same origin, else a free one,
// else the one whose newest failure is oldest, if c is newer.
func (p *peerCounts) merge(c *peerCounter) {
	free, oldest := -1, -1
	for i := range p {
		switch {
		case p[i].origin == c.origin:
			mergeRing(&p[i].slots, &p[i].newestSlot, &c.slots, c.newestSlot)
			return
		case p[i].origin == 0:
			if free < 0 {
				free = i
			}
		case oldest < 0 || p[i].newestSlot < p[oldest].newestSlot:
			oldest = i
		}
	}
	switch {
	case free >= 0:
		p[free] = *c
	case c.newestSlot > p[oldest].newestSlot:
		p[oldest] = *c
	}
}

// Records returns every IP that holds state, blocked ones first, with its
// times and counters (the local origin's and the other replicas'): the full
// state a replica hands to another in an anti-entropy exchange. At most limit
// records are returned (0: no bound).
func (l *Limiter) Records(limit int) []Record {
	now, wallNow := l.instant()
	nowSlot := slotOf(now, l.slotWidth)
	var blocked, rest []Record
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		for k, e := range s.entries {
			if s.idleAt(k, &e, now, nowSlot) {
				continue
			}
			r := Record{
				IP:              k.addr(),
				BlockedUntil:    wallTime(e.blockedUntil, now, wallNow),
				SuspiciousUntil: wallTime(e.suspiciousUntil, now, wallNow),
			}
			if e.failures(nowSlot) > 0 {
				r.Counters = append(r.Counters, Counter{Origin: l.origin, NewestSlot: e.newestSlot + l.slotShift, Slots: e.slots})
			}
			if p, ok := s.peers[k]; ok {
				for j := range p {
					pc := &p[j]
					if pc.origin == 0 {
						continue
					}
					if pc.failures(nowSlot) > 0 {
						r.Counters = append(r.Counters, Counter{Origin: pc.origin, NewestSlot: pc.newestSlot + l.slotShift, Slots: pc.slots})
					}
				}
			}
			if r.BlockedUntil != 0 {
				blocked = append(blocked, r)
			} else {
				rest = append(rest, r)
			}
		}
		s.mu.Unlock()
	}
	out := append(blocked, rest...)
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

// slotShiftFor is the wall-clock slot of local slot 0.
func slotShiftFor(base time.Time, slotWidth int64) int64 {
	return slotOf(base.UnixNano(), slotWidth)
}
