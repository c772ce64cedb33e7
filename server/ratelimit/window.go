package ratelimit

import "math"

// Failures are counted in a ring of per-slot counters: a sliding window cut
// into slots.
//
// Why not the alternatives:
//   - a count with a window start resets all at once, so a failure may be
//     forgotten right after it happened and suspicion ends at an arbitrary
//     moment;
//   - a leaky bucket (one decaying number) drains at BlockAfter per Window,
//     so ten failures spread evenly over a minute never add up to ten and
//     the config would no longer mean "N failures within Window";
//   - one timestamp per failure is exact but its size grows with
//     BlockAfter.
//
// The ring spans Window plus one slot, so a failure counts for at least
// Window (never less, which is what keeps the guarantee "N failures within
// Window block") and is forgotten at most one slot, about Window/7, later.
// It is a fixed 16 bytes however many failures there are.
const (
	slotCount = 8 // a power of two, so ring indices are a mask
	slotMask  = slotCount - 1
)

// entry is everything kept per tracked IP. It holds no pointers, so the
// garbage collector never scans the table, and it is 40 bytes, so with its
// 16-byte key a tracked IP costs well under 128 bytes of map.
//
// Times are nanoseconds since Limiter.base, measured on the monotonic
// clock, so a wall-clock step neither lifts nor lengthens a block.
type entry struct {
	newestSlot      int64 // slot index that slots[newestSlot&slotMask] counts
	blockedUntil    int64 // blocked while now < blockedUntil
	suspiciousUntil int64 // slowed while now < suspiciousUntil
	slots           [slotCount]uint16
}

// failures returns how many failures are still inside the window at nowSlot.
func (e *entry) failures(nowSlot int64) int {
	nowSlot = max(nowSlot, e.newestSlot)
	if nowSlot-e.newestSlot >= slotCount {
		return 0
	}
	total := 0
	for s := nowSlot - slotCount + 1; s <= e.newestSlot; s++ {
		total += int(e.slots[s&slotMask])
	}
	return total
}

// addFailures counts n failures in the slot nowSlot, first clearing the
// slots that time has moved past.
func (e *entry) addFailures(nowSlot int64, n int) {
	if nowSlot > e.newestSlot {
		if nowSlot-e.newestSlot >= slotCount {
			e.slots = [slotCount]uint16{}
		} else {
			for s := e.newestSlot + 1; s <= nowSlot; s++ {
				e.slots[s&slotMask] = 0
			}
		}
		e.newestSlot = nowSlot
	}
	i := e.newestSlot & slotMask
	e.slots[i] = uint16(min(int(e.slots[i])+n, math.MaxUint16))
}

// belowAt returns the time at which, with no further failures, the count
// drops below threshold: when the oldest slots holding it up leave the
// ring. It returns 0 if the count is below threshold already.
func (e *entry) belowAt(nowSlot int64, threshold int, slotWidth int64) int64 {
	total := e.failures(nowSlot)
	if total < threshold {
		return 0
	}
	nowSlot = max(nowSlot, e.newestSlot)
	for s := nowSlot - slotCount + 1; s <= e.newestSlot; s++ {
		total -= int(e.slots[s&slotMask])
		if total < threshold {
			// Slot s is counted up to slot s+slotCount-1 inclusive.
			return (s + slotCount) * slotWidth
		}
	}
	return 0 // unreachable: threshold >= 1 and total falls to 0
}

// idle reports whether the entry no longer affects any decision, so it can
// be dropped.
func (e *entry) idle(now, nowSlot int64) bool {
	return now >= e.blockedUntil && now >= e.suspiciousUntil && e.failures(nowSlot) == 0
}

// slotWidthFor cuts window into slotCount-1 slots, rounding up so that the
// ring never covers less than window.
func slotWidthFor(window int64) int64 {
	return (window + slotCount - 2) / (slotCount - 1)
}

// slotOf is floor division, so times before the base (possible only with a
// test clock set backwards) still land in the right slot.
func slotOf(now, slotWidth int64) int64 {
	s := now / slotWidth
	if now%slotWidth < 0 {
		s--
	}
	return s
}
