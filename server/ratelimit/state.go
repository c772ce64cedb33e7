package ratelimit

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// StateVersion is the State.Version this package writes and reads.
const StateVersion = 1

// State is the part of a Limiter worth handing to its successor when a pod
// is replaced, so that a rollout does not lift every block.
type State struct {
	Version    int       `json:"version"`
	ExportedAt time.Time `json:"exported_at"`
	Entries    []Entry   `json:"entries"`
}

// Entry is one IP's state. Times are absolute so the state means the same
// thing to a process started later.
type Entry struct {
	IP string `json:"ip"`
	// Failures is the count within the window when exported.
	Failures        int        `json:"failures,omitempty"`
	SuspiciousUntil *time.Time `json:"suspicious_until,omitempty"`
	BlockedUntil    *time.Time `json:"blocked_until,omitempty"`
}

// Export returns the IPs that are blocked or suspicious now, sorted by
// address, with their failure counts. IPs with a few failures and nothing
// else are left out: losing them costs a client a handful of extra guesses,
// and they would make up most of a large state.
//
// Absolute times are the clock's current wall time plus the monotonic time
// left, so a wall-clock step since New does not shift them.
func (l *Limiter) Export() State {
	wallNow := l.clk.Now()
	now := int64(wallNow.Sub(l.base))
	nowSlot := slotOf(now, l.slotWidth)
	wallNow = wallNow.UTC() // drops the monotonic reading

	type addrEntry struct {
		addr  netip.Addr
		entry Entry
	}
	var found []addrEntry
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		for k, e := range s.entries {
			blocked, suspicious := now < e.blockedUntil, now < e.suspiciousUntil
			if !blocked && !suspicious {
				continue
			}
			addr := k.addr()
			out := Entry{IP: addr.String(), Failures: e.failures(nowSlot)}
			if blocked {
				t := wallNow.Add(time.Duration(e.blockedUntil - now))
				out.BlockedUntil = &t
			}
			if suspicious {
				t := wallNow.Add(time.Duration(e.suspiciousUntil - now))
				out.SuspiciousUntil = &t
			}
			found = append(found, addrEntry{addr, out})
		}
		s.mu.Unlock()
	}
	slices.SortFunc(found, func(a, b addrEntry) int { return a.addr.Compare(b.addr) })

	entries := make([]Entry, len(found))
	for i, f := range found {
		entries[i] = f.entry
	}
	return State{Version: StateVersion, ExportedAt: wallNow, Entries: entries}
}

// Import merges s into the limiter and returns how many entries it took.
//
//   - Entries already expired are skipped. Failure counts carry no time of
//     their own, so they are taken only if s was exported less than a
//     Window ago, and then count as failures made now.
//   - For an IP already tracked, each field becomes the larger of the two,
//     so importing never lengthens a block beyond max(existing, imported)
//     and importing the same state twice changes nothing.
//   - Blocks are clamped to BlockDuration from now and suspicion to the
//     window's span: a state file is input, and a far-future time in it
//     must not ban an address for good.
//   - The cap holds: imports only fill free room and never evict. Blocks
//     are imported first, so they are what fits when not everything does.
//
// Entries that cannot be read are skipped; the error then says how many
// and what was wrong with the first. A Version other than StateVersion is
// rejected whole.
func (l *Limiter) Import(s State) (imported int, err error) {
	if s.Version != StateVersion {
		return 0, fmt.Errorf("ratelimit: state version %d is not supported; this build reads version %d", s.Version, StateVersion)
	}
	wallNow := l.clk.Now()
	now := int64(wallNow.Sub(l.base))
	nowSlot := slotOf(now, l.slotWidth)
	// A state stamped in the future (clock skew between pods) is as fresh
	// as it gets.
	failuresFresh := !s.ExportedAt.IsZero() && wallNow.Sub(s.ExportedAt) < l.cfg.Window

	var firstErr error
	invalid := 0
	for _, blocksPass := range []bool{true, false} {
		for i := range s.Entries {
			in := &s.Entries[i]
			if blocksPass != (in.BlockedUntil != nil && in.BlockedUntil.After(wallNow)) {
				continue
			}
			k, e, ok, err := l.fromEntry(in, wallNow, now, nowSlot, failuresFresh)
			if err != nil {
				invalid++
				if firstErr == nil {
					firstErr = fmt.Errorf("entry %d: %w", i, err)
				}
				continue
			}
			if ok && l.merge(k, e, nowSlot) {
				imported++
			}
		}
	}
	if invalid > 0 {
		err = fmt.Errorf("ratelimit: skipped %d of %d state entries; first: %w", invalid, len(s.Entries), firstErr)
	}
	return imported, err
}

// importedEntry is one readable, unexpired state entry in the limiter's units.
type importedEntry struct {
	failures        int
	blockedUntil    int64
	suspiciousUntil int64
}

func (l *Limiter) fromEntry(in *Entry, wallNow time.Time, now, nowSlot int64, failuresFresh bool) (key, importedEntry, bool, error) {
	addr, err := netip.ParseAddr(strings.TrimSpace(in.IP))
	if err != nil {
		return key{}, importedEntry{}, false, fmt.Errorf("ip %q is not an IP address", in.IP)
	}
	if in.Failures < 0 {
		return key{}, importedEntry{}, false, fmt.Errorf("ip %s: failures is %d, want 0 or more", in.IP, in.Failures)
	}
	var e importedEntry
	if failuresFresh {
		e.failures = min(in.Failures, maxThreshold)
	}
	// time.Time.Sub saturates, so absurd times cannot overflow here.
	if in.BlockedUntil != nil {
		if left := min(in.BlockedUntil.Sub(wallNow), l.cfg.BlockDuration); left > 0 {
			e.blockedUntil = now + int64(left)
		}
	}
	if in.SuspiciousUntil != nil {
		if left := min(in.SuspiciousUntil.Sub(wallNow), time.Duration(slotCount*l.slotWidth)); left > 0 {
			e.suspiciousUntil = now + int64(left)
		}
	}
	if e.failures == 0 && e.blockedUntil == 0 && e.suspiciousUntil == 0 {
		return key{}, importedEntry{}, false, nil // expired
	}
	return keyOf(addr), e, true, nil
}

// merge folds in into the entry for k, creating it if there is room. It
// reports whether the entry was taken.
func (l *Limiter) merge(k key, in importedEntry, nowSlot int64) bool {
	s := l.shardFor(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[k]
	if !ok {
		if len(s.entries) >= s.capacity {
			return false
		}
		e = entry{newestSlot: nowSlot}
	}
	e.blockedUntil = max(e.blockedUntil, in.blockedUntil)
	e.suspiciousUntil = max(e.suspiciousUntil, in.suspiciousUntil)
	if have := e.failures(nowSlot); in.failures > have {
		e.addFailures(nowSlot, in.failures-have)
	}
	s.put(k, e)
	return true
}
