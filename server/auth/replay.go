package auth

import (
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// MaxTrackedTokens bounds the replay cache: about 80 bytes a token, so at
// most about 8 MB; at the default rate limits a key would have to mint
// 170 tokens a second for ten minutes to fill it.
const MaxTrackedTokens = 100_000

// TokenUses is the replay cache of client tokens: it counts the sessions
// each token opened on this process, for the token's lifetime, and refuses
// a use beyond the limit, so that a token leaked from a page (a log, a
// browser extension, a shared link) cannot open sessions its owner did not.
// Every replica keeps its own: a token may open its limit on each pod.
//
// It is bounded: each entry is kept until its token expires (entries are
// dropped in the order they came, once expired); when MaxTrackedTokens
// tokens are tracked, the oldest entry is dropped, whatever its expiry —
// its token could then be used again on this process, which is counted as
// an eviction (voicegateway_client_token_uses_evictions_total).
type TokenUses struct {
	max      int
	capacity int
	clk      clock.PassiveClock

	mu   sync.Mutex
	uses map[string]*tokenUse
	// order holds the token ids in the order they were first used; head
	// is the oldest. A ring: it never holds more than capacity ids.
	order      []string
	head, size int
	evictions  int64
}

type tokenUse struct {
	expires time.Time
	n       int
}

// NewTokenUses returns a replay cache that lets each token open at most
// max sessions. A nil clk means the real clock.
func NewTokenUses(max int, clk clock.PassiveClock) *TokenUses {
	return newTokenUses(max, MaxTrackedTokens, clk)
}

func newTokenUses(max, capacity int, clk clock.PassiveClock) *TokenUses {
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &TokenUses{max: max, capacity: capacity, clk: clk, uses: map[string]*tokenUse{}, order: make([]string, capacity)}
}

// Use records one session opened with the token id (which expires at
// expires) and reports whether it is within the limit; release takes the
// use back, for a session that was refused after all (a limit after the
// upgrade). A refused use records nothing.
func (u *TokenUses) Use(id string, expires time.Time) (release func(), ok bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	now := u.clk.Now()
	u.dropExpiredLocked(now)
	e := u.uses[id]
	switch {
	case e != nil && e.n >= u.max:
		return nil, false
	case e != nil:
		e.n++
	default:
		if u.size == u.capacity {
			u.dropOldestLocked()
			u.evictions++
		}
		e = &tokenUse{expires: expires, n: 1}
		u.uses[id] = e
		u.order[(u.head+u.size)%u.capacity] = id
		u.size++
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			u.mu.Lock()
			defer u.mu.Unlock()
			if cur := u.uses[id]; cur == e && e.n > 0 {
				e.n--
			}
		})
	}, true
}

// dropExpiredLocked drops the oldest entries while they have expired. An
// entry that lives longer than the ones after it holds them until it
// expires too: they cost memory a little longer, never correctness.
func (u *TokenUses) dropExpiredLocked(now time.Time) {
	for u.size > 0 {
		e := u.uses[u.order[u.head]]
		if e != nil && now.Before(e.expires) {
			return
		}
		u.dropOldestLocked()
	}
}

func (u *TokenUses) dropOldestLocked() {
	delete(u.uses, u.order[u.head])
	u.order[u.head] = ""
	u.head = (u.head + 1) % u.capacity
	u.size--
}

// Stats reports the tokens tracked and the entries evicted before they
// expired, for the metrics.
func (u *TokenUses) Stats() (tracked int, evictions int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.dropExpiredLocked(u.clk.Now())
	return u.size, u.evictions
}
