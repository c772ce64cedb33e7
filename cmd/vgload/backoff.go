package main

import (
	"math/rand/v2"
	"time"
)

// backoff spaces reconnect attempts: exponential from base up to limit,
// each wait drawn uniformly from its upper half ("equal jitter"), so that a
// thousand clients told to reconnect at once do not come back in lockstep,
// and none retries sooner than half the nominal wait.
type backoff struct {
	base, limit time.Duration
	rand        *rand.Rand
}

// wait returns the pause before retry number attempt (0 for the first retry).
func (b backoff) wait(attempt int) time.Duration {
	d := b.base
	for i := 0; i < attempt && d < b.limit; i++ {
		d *= 2
	}
	d = min(d, b.limit)
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + time.Duration(b.rand.Int64N(int64(d-half)+1))
}

// jitter returns d stretched by a random factor in [1, 1+frac]: the hint in
// gateway.draining is already jittered per client by the server, and a
// little more keeps clients of one pod apart from each other's retries.
func jitter(r *rand.Rand, d time.Duration, frac float64) time.Duration {
	if d <= 0 || frac <= 0 {
		return d
	}
	return d + time.Duration(r.Float64()*frac*float64(d))
}
