package main

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestBackoffWait(t *testing.T) {
	b := backoff{base: 100 * time.Millisecond, limit: 5 * time.Second, rand: rand.New(rand.NewPCG(1, 2))}
	tests := map[string]struct {
		attempt  int
		min, max time.Duration
	}{
		"first retry":            {attempt: 0, min: 50 * time.Millisecond, max: 100 * time.Millisecond},
		"second retry doubles":   {attempt: 1, min: 100 * time.Millisecond, max: 200 * time.Millisecond},
		"fifth retry":            {attempt: 4, min: 800 * time.Millisecond, max: 1600 * time.Millisecond},
		"capped at the limit":    {attempt: 10, min: 2500 * time.Millisecond, max: 5 * time.Second},
		"huge attempt is capped": {attempt: 1000, min: 2500 * time.Millisecond, max: 5 * time.Second},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			seen := map[time.Duration]bool{}
			for range 200 {
				d := b.wait(tc.attempt)
				if d < tc.min || d > tc.max {
					t.Fatalf("wait(%d) = %v, want within [%v, %v]", tc.attempt, d, tc.min, tc.max)
				}
				seen[d] = true
			}
			if len(seen) < 50 {
				t.Fatalf("wait(%d) took only %d distinct values in 200 draws: not jittered", tc.attempt, len(seen))
			}
		})
	}
}

func TestJitter(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	tests := map[string]struct {
		d        time.Duration
		frac     float64
		min, max time.Duration
	}{
		"ten percent":   {d: time.Second, frac: 0.1, min: time.Second, max: 1100 * time.Millisecond},
		"no jitter":     {d: time.Second, frac: 0, min: time.Second, max: time.Second},
		"zero duration": {d: 0, frac: 0.5, min: 0, max: 0},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			for range 100 {
				if got := jitter(r, tc.d, tc.frac); got < tc.min || got > tc.max {
					t.Fatalf("jitter(%v, %v) = %v, want within [%v, %v]", tc.d, tc.frac, got, tc.min, tc.max)
				}
			}
		})
	}
}
