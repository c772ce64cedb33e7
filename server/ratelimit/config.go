package ratelimit

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Defaults applied by Config.WithDefaults.
const (
	DefaultWindow          = time.Minute
	DefaultSuspiciousAfter = 5
	DefaultBlockAfter      = 10
	DefaultBlockDuration   = 15 * time.Minute
	DefaultSuspiciousDelay = time.Second
	DefaultMaxTracked      = 100_000
	DefaultCleanupInterval = time.Minute
)

// Bounds checked by Config.Validate.
const (
	// minWindow keeps each of the window's slots at least a microsecond
	// wide so slot arithmetic stays meaningful.
	minWindow = time.Millisecond
	// maxWindow keeps slot times far from int64 overflow; counting
	// failures over days is a ban list's job, not this table's.
	maxWindow = 24 * time.Hour
	// maxBlockDuration keeps expiry arithmetic far from int64 overflow.
	maxBlockDuration = 365 * 24 * time.Hour
	// maxThreshold is the most a per-slot counter can hold; a threshold
	// above it could never be reached.
	maxThreshold = math.MaxUint16
)

// Config tunes the limiter. The zero value of a field means its default;
// call WithDefaults before Validate, as New does.
type Config struct {
	// Window is how long a failure counts. A failure is remembered for at
	// least Window and at most about Window/7 longer (see window.go).
	Window time.Duration
	// SuspiciousAfter is the number of failures within Window that make an
	// IP suspicious: its next attempts are slowed by SuspiciousDelay.
	// Setting it equal to BlockAfter turns slowing off.
	SuspiciousAfter int
	// BlockAfter is the number of failures within Window that block the IP
	// for BlockDuration.
	BlockAfter int
	// BlockDuration is how long a block lasts. Failures during a block do
	// not lengthen it.
	BlockDuration time.Duration
	// SuspiciousDelay is how long the caller should hold a suspicious
	// client before doing any authentication work for it.
	SuspiciousDelay time.Duration
	// MaxTracked is a hard cap on the number of IPs held. When it is
	// reached, recording a failure for a new IP evicts another one.
	MaxTracked int
	// CleanupInterval is how often Run sweeps expired entries. Expired
	// entries already read as Allow before they are swept; the sweep only
	// gives the memory back.
	CleanupInterval time.Duration
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	if c.SuspiciousAfter == 0 {
		c.SuspiciousAfter = DefaultSuspiciousAfter
	}
	if c.BlockAfter == 0 {
		c.BlockAfter = DefaultBlockAfter
	}
	if c.BlockDuration == 0 {
		c.BlockDuration = DefaultBlockDuration
	}
	if c.SuspiciousDelay == 0 {
		c.SuspiciousDelay = DefaultSuspiciousDelay
	}
	if c.MaxTracked == 0 {
		c.MaxTracked = DefaultMaxTracked
	}
	if c.CleanupInterval == 0 {
		c.CleanupInterval = DefaultCleanupInterval
	}
	return c
}

// Validate reports every field that cannot work, each with what to change.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("ratelimit: "+format, args...))
	}
	if c.Window < minWindow || c.Window > maxWindow {
		add("Window is %v; set it between %v and %v (default %v)", c.Window, minWindow, maxWindow, DefaultWindow)
	}
	if c.SuspiciousAfter < 1 || c.SuspiciousAfter > maxThreshold {
		add("SuspiciousAfter is %d; set it between 1 and %d failures (default %d)", c.SuspiciousAfter, maxThreshold, DefaultSuspiciousAfter)
	}
	if c.BlockAfter < 1 || c.BlockAfter > maxThreshold {
		add("BlockAfter is %d; set it between 1 and %d failures (default %d)", c.BlockAfter, maxThreshold, DefaultBlockAfter)
	}
	if c.SuspiciousAfter > c.BlockAfter {
		add("SuspiciousAfter (%d) is above BlockAfter (%d), so an IP would be blocked before it is slowed; lower SuspiciousAfter or raise BlockAfter", c.SuspiciousAfter, c.BlockAfter)
	}
	if c.BlockDuration <= 0 || c.BlockDuration > maxBlockDuration {
		add("BlockDuration is %v; set it above 0 and at most %v (default %v)", c.BlockDuration, maxBlockDuration, DefaultBlockDuration)
	}
	if c.SuspiciousDelay < 0 {
		add("SuspiciousDelay is %v; set it to 0 or more (default %v)", c.SuspiciousDelay, DefaultSuspiciousDelay)
	}
	if c.MaxTracked < 1 {
		add("MaxTracked is %d; set it to 1 or more IPs (default %d)", c.MaxTracked, DefaultMaxTracked)
	}
	if c.CleanupInterval <= 0 {
		add("CleanupInterval is %v; set it above 0 (default %v)", c.CleanupInterval, DefaultCleanupInterval)
	}
	return errors.Join(errs...)
}
