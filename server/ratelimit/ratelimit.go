// Package ratelimit tracks failed authentication per client IP, so that a
// client guessing credentials is first slowed and then blocked before any
// authentication work is done for it.
//
// The system this replaces kept two maps of suspicious and blocked IPs that
// grew forever and swept them from an interval nobody stopped. Here both are
// impossible by construction: the table has a hard cap (MaxTracked) with an
// eviction rule and a metric, expired state reads as expired whether or not
// it has been swept, and the only sweeping loop is Run, which the caller
// owns and which stops with its context.
//
// Only Failure adds IPs. Check, called before every authentication, never
// inserts, so a flood of new well-behaved clients costs nothing.
//
// IPs are compared as addresses: IPv4-mapped IPv6 is IPv4 and zones are
// ignored. The zero netip.Addr (a peer that could not be parsed) is one
// shared entry rather than a way around the limiter.
package ratelimit

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"sync/atomic"
	"time"

	"k8s.io/utils/clock"
)

// ErrAlreadyRunning is returned by Run when another Run is still going for
// the same Limiter: two sweepers would be one nobody meant to own.
var ErrAlreadyRunning = errors.New("ratelimit: Run is already running for this Limiter")

// Limiter is safe for concurrent use. Create it with New.
type Limiter struct {
	cfg Config
	clk clock.Clock
	// base is the moment offsets are measured from. Taken from clk, it
	// carries a monotonic reading on the real clock.
	base      time.Time
	slotWidth int64

	shards []shard
	// shardShift turns a 64-bit hash into a shard index.
	shardShift uint
	// seed makes the shard of an IP unpredictable, so a client cannot aim
	// a flood at the shard holding someone else's block.
	seed [2]uint64

	running atomic.Bool

	// origin and observe are set by Replicate, before any use.
	origin  Origin
	observe func(Change)
	// slotShift is the wall-clock slot number of local slot 0.
	slotShift int64
}

// New returns a Limiter for cfg (zero fields take their defaults) that reads
// time from clk; a nil clk means the real clock. Nothing is started: call
// Run to sweep expired entries.
func New(cfg Config, clk clock.Clock) (*Limiter, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if clk == nil {
		clk = clock.RealClock{}
	}
	l := &Limiter{
		cfg:       cfg,
		clk:       clk,
		base:      clk.Now(),
		slotWidth: slotWidthFor(int64(cfg.Window)),
		seed:      [2]uint64{rand.Uint64(), rand.Uint64()},
	}
	l.slotShift = slotShiftFor(l.base, l.slotWidth)
	l.initShards(cfg.MaxTracked)
	return l, nil
}

// Config returns the configuration in use, defaults filled in.
func (l *Limiter) Config() Config { return l.cfg }

// Check says what to do with ip before any authentication work. It never
// adds ip to the table.
func (l *Limiter) Check(ip netip.Addr) Decision {
	k := keyOf(ip)
	s := l.shardFor(k)
	if s.size.Load() == 0 {
		return Decision{}
	}
	s.mu.Lock()
	e, ok := s.entries[k]
	s.mu.Unlock()
	if !ok {
		return Decision{}
	}
	return l.decide(&e, l.now())
}

// Failure records a failed authentication attempt from ip and returns the
// decision that now applies to it.
func (l *Limiter) Failure(ip netip.Addr) Decision {
	k := keyOf(ip)
	s := l.shardFor(k)
	var wallNow int64
	var now int64
	if l.observe != nil {
		now, wallNow = l.instant()
	} else {
		now = l.now()
	}
	nowSlot := slotOf(now, l.slotWidth)

	s.mu.Lock()
	s.failuresTotal++
	e, ok := s.entries[k]
	if !ok {
		if len(s.entries) >= s.capacity {
			s.evictOne(now, nowSlot)
		}
		e = entry{newestSlot: nowSlot}
	}
	e.addFailures(nowSlot, 1)
	// The count is the fleet's: this replica's failures and those the
	// other replicas reported (replicate.go).
	n, peers := s.fleetFailures(k, &e, nowSlot)
	// A block already running is not lengthened: the client is refused
	// before auth, so failures during a block come from requests that
	// raced the block, not from a client that ignored it.
	blocked := false
	if n >= l.cfg.BlockAfter && now >= e.blockedUntil {
		e.blockedUntil = now + int64(l.cfg.BlockDuration)
		s.blocksTotal++
		blocked = true
	}
	counts := &e
	var fleet entry
	if peers != nil {
		fleet = combined(&e, peers, nowSlot)
		counts = &fleet
	}
	if until := counts.belowAt(nowSlot, l.cfg.SuspiciousAfter, l.slotWidth); until > e.suspiciousUntil {
		e.suspiciousUntil = until
	}
	s.put(k, e)
	d := l.decide(&e, now)
	if l.observe == nil {
		s.mu.Unlock()
		return d
	}
	ch := l.change(k, &e, now, wallNow, blocked)
	s.mu.Unlock()
	l.observe(ch)
	return d
}

// Success records a successful authentication from ip. It lifts suspicion,
// so a user who finally typed the right key is not slowed next time, but
// not a block, and it keeps the failures counted: otherwise a client
// holding one valid key could interleave it with guesses and never be
// blocked.
func (l *Limiter) Success(ip netip.Addr) {
	k := keyOf(ip)
	s := l.shardFor(k)
	if s.size.Load() == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.entries[k]; ok && e.suspiciousUntil != 0 {
		e.suspiciousUntil = 0
		s.entries[k] = e
	}
}

func (l *Limiter) decide(e *entry, now int64) Decision {
	if now < e.blockedUntil {
		return Decision{Verdict: Block, RetryAfter: time.Duration(e.blockedUntil - now)}
	}
	if now < e.suspiciousUntil {
		return Decision{Verdict: Slow, Delay: l.cfg.SuspiciousDelay}
	}
	return Decision{}
}

// now is the time since base in nanoseconds.
func (l *Limiter) now() int64 {
	return int64(l.clk.Since(l.base))
}
