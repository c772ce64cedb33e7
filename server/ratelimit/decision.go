package ratelimit

import "time"

// Verdict is what the caller should do with a client before doing any
// authentication work for it.
type Verdict uint8

const (
	// Allow lets the attempt proceed at once.
	Allow Verdict = iota
	// Slow lets the attempt proceed after Decision.Delay.
	Slow
	// Block refuses the attempt; Decision.RetryAfter says for how long.
	Block
)

func (v Verdict) String() string {
	switch v {
	case Allow:
		return "allow"
	case Slow:
		return "slow"
	case Block:
		return "block"
	default:
		return "unknown"
	}
}

// Decision is a Verdict with the time that goes with it. The zero Decision
// is Allow.
type Decision struct {
	Verdict Verdict
	// Delay is how long to hold a Slow client before working on it.
	Delay time.Duration
	// RetryAfter is the exact time left on a Block; rounding it up to whole
	// seconds for a Retry-After header is the caller's job.
	RetryAfter time.Duration
}
