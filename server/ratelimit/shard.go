package ratelimit

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
	"sync"
	"sync/atomic"
)

const (
	// maxShards bounds lock contention: with 64 independent mutexes,
	// parallel Checks rarely meet.
	maxShards = 64
	// minPerShard keeps shards large enough for sampled eviction to have a
	// choice; small tables get fewer shards.
	minPerShard = 64
	// evictionSamples is how many entries are looked at to pick one to
	// evict, as Redis does with maxmemory-samples.
	evictionSamples = 8
	// shrinkAbove is the smallest peak worth rebuilding a map for; Go maps
	// never give back the room a flood made them grow to.
	shrinkAbove = 256
)

// key is an IP as 16 bytes, IPv4 in its IPv4-mapped form. Unlike
// netip.Addr it holds no pointer (the zone), so the map is never scanned by
// the garbage collector.
type key [16]byte

// keyOf maps ip to its key. Zones are dropped. The zero Addr maps to the
// key of "::", so requests whose peer could not be parsed share one entry
// instead of escaping the limiter.
func keyOf(ip netip.Addr) key {
	return ip.Unmap().As16()
}

func (k key) addr() netip.Addr {
	return netip.AddrFrom16(k).Unmap()
}

// shard is one lock and one map. Each shard holds at most capacity entries,
// and the capacities add up to MaxTracked, so the cap holds without a global
// lock or counter.
type shard struct {
	mu      sync.Mutex
	entries map[key]entry
	// peers holds other replicas' failure counters (replicate.go), only
	// for keys of entries; nil until the first merge.
	peers    map[key]peerCounts
	capacity int
	peak     int // largest len(entries) since the map was last rebuilt
	// size mirrors len(entries) so Check and Success can skip the lock
	// when the shard is empty, the common case for a well-behaved client.
	size atomic.Int64
	// Totals, guarded by mu; per shard so failures do not all contend on
	// one cache line.
	failuresTotal  uint64
	blocksTotal    uint64
	evictionsTotal uint64
	// Pad to two cache lines so neighbouring shards' locks do not share
	// one.
	_ [128 - 72]byte
}

func (l *Limiter) initShards(maxTracked int) {
	n := maxShards
	for n > 1 && maxTracked/n < minPerShard {
		n /= 2
	}
	l.shards = make([]shard, n)
	l.shardShift = uint(64 - bits.TrailingZeros(uint(n)))
	for i := range l.shards {
		c := maxTracked / n
		if i < maxTracked%n {
			c++
		}
		l.shards[i].capacity = c
		l.shards[i].entries = make(map[key]entry)
	}
}

// shardFor hashes k with the limiter's seed (a 64x64→128 multiply, as in
// wyhash) and picks a shard from the top bits.
func (l *Limiter) shardFor(k key) *shard {
	hi := binary.LittleEndian.Uint64(k[:8]) ^ l.seed[0]
	lo := binary.LittleEndian.Uint64(k[8:]) ^ l.seed[1]
	h1, h0 := bits.Mul64(hi, lo)
	h := (h1 ^ h0) * 0x9e3779b97f4a7c15
	return &l.shards[h>>l.shardShift]
}

// put stores e under k. mu must be held.
func (s *shard) put(k key, e entry) {
	s.entries[k] = e
	n := len(s.entries)
	s.peak = max(s.peak, n)
	s.size.Store(int64(n))
}

// evictOne makes room for one entry. mu must be held.
//
// It looks at up to evictionSamples entries, starting where Go's randomised
// map iteration happens to start, and removes the least valuable: an idle
// entry at once, else an unblocked one before a blocked one, a plain one
// before a suspicious one, then the one with fewer failures in the window,
// and among equals the one whose newest failure is oldest (a block: the one
// that ends first). Fewer failures first: a flood of one-failure addresses
// from elsewhere must not push out an address on its way to a block. This is O(1) per insert and
// never scans the map; the price is that the choice is the best of a sample,
// not of the table. A blocked IP is evicted only if every sampled entry is
// blocked too, so a flood of new, unblocked IPs cannot push a block out.
func (s *shard) evictOne(now, nowSlot int64) {
	var victim key
	var worst entry
	found, live := false, true
	seen := 0
	for k, e := range s.entries {
		if s.idleAt(k, &e, now, nowSlot) {
			victim, found, live = k, true, false
			break
		}
		if !found || evictBefore(&e, &worst, now, nowSlot) {
			victim, worst, found = k, e, true
		}
		seen++
		if seen == evictionSamples {
			break
		}
	}
	if !found {
		return
	}
	s.remove(victim)
	s.size.Store(int64(len(s.entries)))
	// Only entries that still held state count: idle ones would have
	// been swept anyway, and counting them would make a healthy table
	// look too small.
	if live {
		s.evictionsTotal++
	}
}

// evictBefore reports whether a is a better eviction choice than b.
func evictBefore(a, b *entry, now, nowSlot int64) bool {
	aBlocked, bBlocked := now < a.blockedUntil, now < b.blockedUntil
	if aBlocked != bBlocked {
		return !aBlocked
	}
	if aBlocked {
		return a.blockedUntil < b.blockedUntil
	}
	aSuspicious, bSuspicious := now < a.suspiciousUntil, now < b.suspiciousUntil
	if aSuspicious != bSuspicious {
		return !aSuspicious
	}
	if fa, fb := a.failures(nowSlot), b.failures(nowSlot); fa != fb {
		return fa < fb
	}
	return a.newestSlot < b.newestSlot
}
