// Package memory keeps the bytes clients can make the voice server hold —
// a client message being read, buffered input audio, committed turns
// waiting to be played, what a session keeps of its settings, messages
// queued for a client or for an upstream — within a budget, so that no mix
// of clients can push the process past its memory limit and get the pod,
// and every honest call on it, OOM-killed.
//
// A Budget is a fraction of the process's memory limit (Share). Each
// session gets an Account when it is admitted, and the account is promised
// Promised bytes at once: the session's own cost (SessionBytes) and a
// guaranteed buffer (GuaranteedBytes) that covers an ordinary conversation.
// The budget counts, for every account, the larger of its promise and what
// it holds. A new session is admitted only while the promises fit in
// AdmitShare of the budget and its promise fits in what the budget has
// left; buffering beyond a session's promise, of every kind (output on its
// way to the client included), is granted only while everything counted
// stays within AdmitShare. So the rest of the budget (100 − AdmitShare) is
// only ever promised: a session that talks the way people talk is never
// refused, whatever other clients hoard, and a new one finds room for its
// promise as long as the promises do.
//
// One thing passes the budget, and it is bounded: with the budget spent, a
// session beyond its promise may still queue up to OutputGrace bytes of
// output (a client that reads holds a few messages at most, and refusing
// them would end it as too slow), and every session its last message, the
// error that says why it ends (Force). What is let through so is counted
// apart (Over): it never keeps a new session out, and what all sessions
// hold never passes the budget by more than OutputGrace a session plus
// each one's final message.
//
// An account releases everything it holds when it is closed; a session
// closes it when it ends, on every path, so there is nothing to leak.
package memory

import (
	"math"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/voicegateway/voicegateway/server/metrics"
)

// Kind is what held bytes are for; the metrics break the accounted bytes
// down by it.
type Kind int

const (
	// Session is what a session costs besides its buffers (its connection
	// buffers, goroutine stack and state), charged when it is admitted,
	// and the settings a backend keeps for it (the echo backend's
	// instructions).
	Session Kind = iota
	// Audio is buffered input audio and committed turns waiting to be
	// played (the echo backend).
	Audio
	// Outbound is messages queued for a client.
	Outbound
	// Upstream is client messages queued for an upstream (the openai
	// backend).
	Upstream
	// Inbound is a client message being read, beyond the small buffer
	// every message starts in (part of the session's own cost).
	Inbound
	numKinds
)

// String is the kind's metric label.
func (k Kind) String() string { return metrics.MemoryKinds[k] }

const (
	// SessionBytes is charged to every session when it is admitted: an
	// idle session holds about 25 KB (docs/benchmarks.md), and a message
	// being read starts in an 8 KiB buffer.
	SessionBytes = 32 << 10
	// GuaranteedBytes is the buffer every session is promised on top: a
	// caller taking 1 s turns at 24 kHz holds up to about 150 KB (the turn
	// being spoken, the one being played and the last one, kept for
	// response.create) and a few messages on their way out.
	GuaranteedBytes = 192 << 10
	// Promised is what admission sets aside for each session.
	Promised = SessionBytes + GuaranteedBytes
	// OutputGrace is the output a session beyond its promise may still
	// queue for its client when the budget is spent (ReserveOutput): a
	// client that reads holds a few messages at most, so only one that
	// has fallen behind is cut off for the budget's sake.
	OutputGrace = 64 << 10
)

// Share is the part of the memory limit clients may make the server hold,
// in percent: the rest is the Go runtime's room (garbage between
// collections, stacks, the rate limiter's table, the binary).
const Share = 50

// AdmitShare is the part of the budget, in percent, that promises to
// sessions, and what sessions hold beyond them, may take: the rest is only
// ever promised, to new sessions.
const AdmitShare = 87.5

// Budget is the process's memory budget: a limit and the bytes counted
// against it. A zero limit means no budget: everything is counted,
// nothing is refused. It is safe for concurrent use.
type Budget struct {
	limit int64
	// admitLimit bounds the promises, and what is counted when accounts
	// hold more than their promises: the rest of the budget is only ever
	// promised, so hoarders cannot keep new sessions out.
	admitLimit int64
	// reserved is what counts against the budget: the promises and what
	// accounts were granted beyond them; promised is the promises alone;
	// over is what accounts were let hold beyond the budget (output to a
	// client that reads, final messages), counted apart so that it keeps
	// no new session out.
	reserved atomic.Int64
	promised atomic.Int64
	over     atomic.Int64

	reservedGauge prometheus.Gauge
	accounted     [numKinds]prometheus.Gauge
	refusedOpen   prometheus.Counter
	refused       [numKinds]prometheus.Counter
}

// NewBudget returns a budget of limit bytes (0: none) that reports to m.
func NewBudget(limit int64, m *metrics.Server) *Budget {
	limit = max(limit, 0)
	b := &Budget{
		limit:         limit,
		admitLimit:    int64(float64(limit) * AdmitShare / 100),
		reservedGauge: m.Admission.MemoryReserved,
		refusedOpen:   m.Admission.MemoryRefusals.WithLabelValues("session"),
	}
	for k := range numKinds {
		b.accounted[k] = m.Admission.MemoryAccounted.WithLabelValues(k.String())
		what := "buffer"
		if k == Outbound {
			what = "outbound"
		}
		b.refused[k] = m.Admission.MemoryRefusals.WithLabelValues(what)
	}
	m.Admission.MemoryBudget.Set(float64(limit))
	return b
}

// BudgetFor is the budget of a process whose memory limit is limit bytes
// (0: unknown, no budget).
func BudgetFor(limit int64) int64 { return percentOf(limit, Share) }

// percentOf is p percent of n, without overflowing for any n.
func percentOf(n, p int64) int64 { return n/100*p + n%100*p/100 }

// Limit is the budget in bytes; 0 when there is none.
func (b *Budget) Limit() int64 { return b.limit }

// Reserved is what accounts are charged now: what counts against the
// budget, and what was let through beyond it (Over).
func (b *Budget) Reserved() int64 { return b.reserved.Load() + b.over.Load() }

// Over is what accounts were let hold beyond the budget: output for
// clients that read while the budget was spent, and final messages.
func (b *Budget) Over() int64 { return b.over.Load() }

// MaxSessions is how many idle sessions the budget admits.
func (b *Budget) MaxSessions() int {
	if b.limit == 0 {
		return math.MaxInt
	}
	return int(b.admitLimit / Promised)
}

// Open admits a session: it sets its promise aside and returns its
// account, or false when the promises would pass AdmitShare of the budget
// or the promise does not fit in what the budget has left (the caller
// refuses the session with memory_limit). What accounts were let hold
// beyond the budget does not count here.
func (b *Budget) Open() (*Account, bool) {
	if !add(&b.promised, Promised, b.admitLimit, b.limit) {
		b.refusedOpen.Inc()
		return nil, false
	}
	if !b.take(Promised, b.limit) {
		b.promised.Add(-Promised)
		b.refusedOpen.Inc()
		return nil, false
	}
	a := &Account{b: b, promise: Promised, total: SessionBytes}
	a.held[Session] = SessionBytes
	b.accounted[Session].Add(SessionBytes)
	return a, true
}

// take counts n more bytes against the budget if they fit under limit.
func (b *Budget) take(n, limit int64) bool {
	if !add(&b.reserved, n, limit, b.limit) {
		return false
	}
	b.reservedGauge.Add(float64(n))
	return true
}

// add adds n to v if the sum stays within limit, or always when budget is
// 0 (no budget) or n is not positive.
func add(v *atomic.Int64, n, limit, budget int64) bool {
	for {
		cur := v.Load()
		if budget > 0 && n > 0 && cur+n > limit {
			return false
		}
		if v.CompareAndSwap(cur, cur+n) {
			return true
		}
	}
}

// give gives back n bytes counted against the budget, and over bytes let
// through beyond it.
func (b *Budget) give(n, over int64) {
	if n != 0 {
		b.reserved.Add(-n)
	}
	if over != 0 {
		b.over.Add(-over)
	}
	if n+over != 0 {
		b.reservedGauge.Sub(float64(n + over))
	}
}

// Account is one session's share of the budget. A nil account grants
// everything and counts nothing (sessions built without a budget, in
// tests). It is safe for concurrent use: the session's reader and writer
// and its backend's goroutines all use it.
type Account struct {
	b       *Budget
	mu      sync.Mutex
	held    [numKinds]int64
	total   int64 // the sum of held
	promise int64 // set aside at Open
	// over is the part of the charge let through beyond the budget
	// (ReserveOutput, Force); it is given back first.
	over   int64
	closed bool
}

// charged is what the account counts: against the budget, and beyond it
// (over).
func (a *Account) charged() int64 { return max(a.total, a.promise) }

// Reserve takes n bytes of kind k for the session. Within the session's
// promise it always succeeds; beyond it, only while what the budget counts
// stays within AdmitShare of it. It returns false (and counts a refusal)
// otherwise, and once the account is closed.
func (a *Account) Reserve(k Kind, n int64) bool {
	if a == nil || n <= 0 {
		return true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return false
	}
	if extra := max(a.total+n, a.promise) - a.charged(); extra > 0 && !a.b.take(extra, a.b.admitLimit) {
		a.b.refused[k].Inc()
		return false
	}
	a.add(k, n)
	return true
}

// ReserveOutput takes n bytes of output queued for the client. It is
// Reserve, except that with the budget spent a session beyond its promise
// still gets them while it holds no more than OutputGrace of output with
// them, beyond the budget (Over). It returns false (and counts a refusal)
// only for a session that would hold more: a client that has fallen
// behind, which the caller ends as too slow.
func (a *Account) ReserveOutput(n int64) bool {
	if a == nil || n <= 0 {
		return true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return false
	}
	if extra := max(a.total+n, a.promise) - a.charged(); extra > 0 && !a.b.take(extra, a.b.admitLimit) {
		if a.held[Outbound]+n > OutputGrace {
			a.b.refused[Outbound].Inc()
			return false
		}
		a.passOver(extra)
	}
	a.add(Outbound, n)
	return true
}

// Force takes n bytes whether or not the budget has room, beyond it if
// need be (Over): for the one message that tells a client why its session
// ends.
func (a *Account) Force(k Kind, n int64) {
	if a == nil || n <= 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return
	}
	if extra := max(a.total+n, a.promise) - a.charged(); extra > 0 && !a.b.take(extra, a.b.admitLimit) {
		a.passOver(extra)
	}
	a.add(k, n)
}

// passOver lets the account hold n bytes beyond the budget (with mu held).
func (a *Account) passOver(n int64) {
	a.over += n
	a.b.over.Add(n)
	a.b.reservedGauge.Add(float64(n))
}

func (a *Account) add(k Kind, n int64) {
	a.held[k] += n
	a.total += n
	a.b.accounted[k].Add(float64(n))
}

// Release gives back n bytes of kind k (at most what the account holds of
// it); what was let through beyond the budget goes first. After Close it
// does nothing: Close gave everything back.
func (a *Account) Release(k Kind, n int64) {
	if a == nil || n <= 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return
	}
	n = min(n, a.held[k])
	before := a.charged()
	a.held[k] -= n
	a.total -= n
	a.b.accounted[k].Sub(float64(n))
	freed := before - a.charged()
	over := min(freed, a.over)
	a.over -= over
	a.b.give(freed-over, over)
}

// Held is what the account holds of kind k.
func (a *Account) Held(k Kind) int64 {
	if a == nil {
		return 0
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.held[k]
}

// Close gives back everything the account holds and its promise; later
// reservations are refused and releases do nothing. It is safe to call
// more than once, and on a nil account.
func (a *Account) Close() {
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return
	}
	a.closed = true
	a.b.give(a.charged()-a.over, a.over)
	a.over = 0
	a.b.promised.Add(-a.promise)
	for k := range numKinds {
		a.b.accounted[k].Sub(float64(a.held[k]))
		a.held[k] = 0
	}
	a.total = 0
}

// SoftLimitPercent is the runtime's soft memory limit the server sets, in
// percent of --memory-limit, when GOMEMLIMIT does not set one: the garbage
// collector works harder near it, well before the kernel's limit.
const SoftLimitPercent = 90

// ProcessLimit settles the process's memory limit and returns it with its
// source: --memory-limit when given (limitFlag > 0), and then, unless
// GOMEMLIMIT is set (gomemlimitSet), it sets the Go runtime's soft limit to
// SoftLimitPercent of it; else the soft limit GOMEMLIMIT set; else 0 (no
// limit known). It changes process-wide state: main calls it once.
func ProcessLimit(limitFlag int64, gomemlimitSet bool) (limit int64, source string) {
	if limitFlag > 0 {
		if !gomemlimitSet {
			debug.SetMemoryLimit(percentOf(limitFlag, SoftLimitPercent))
		}
		return limitFlag, "--memory-limit"
	}
	if soft := debug.SetMemoryLimit(-1); soft != math.MaxInt64 {
		return soft, "GOMEMLIMIT"
	}
	return 0, ""
}
