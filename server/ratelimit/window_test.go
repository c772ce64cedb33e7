package ratelimit

import (
	"testing"
	"time"
	"unsafe"
)

// TestFailureRetention pins the promise in window.go: a failure counts for
// at least Window and at most the ring's span (Window plus one slot, plus
// nanoseconds of rounding) wherever in a slot it falls.
func TestFailureRetention(t *testing.T) {
	window := int64(time.Minute)
	width := slotWidthFor(window)
	span := slotCount * width
	for _, offset := range []int64{0, 1, width / 2, width - 1} {
		var e entry
		at := 5*width + offset
		e.addFailures(slotOf(at, width), 1)
		if got := e.failures(slotOf(at+window, width)); got != 1 {
			t.Errorf("offset %d: failure forgotten after Window: count %d", offset, got)
		}
		if got := e.failures(slotOf(at+span, width)); got != 0 {
			t.Errorf("offset %d: failure still counted after the span: count %d", offset, got)
		}
		until := e.belowAt(slotOf(at, width), 1, width)
		if until-at <= window || until-at > span {
			t.Errorf("offset %d: belowAt is %v after the failure, want in (%v, %v]",
				offset, time.Duration(until-at), time.Duration(window), time.Duration(span))
		}
	}
}

func TestSlotCounterSaturates(t *testing.T) {
	var e entry
	e.addFailures(0, 70_000)
	if got := e.failures(0); got != 65535 {
		t.Errorf("failures = %d, want the counter to saturate at 65535", got)
	}
}

func TestSlotOfFloors(t *testing.T) {
	if got := slotOf(-1, 10); got != -1 {
		t.Errorf("slotOf(-1, 10) = %d, want -1", got)
	}
	if got := slotOf(10, 10); got != 1 {
		t.Errorf("slotOf(10, 10) = %d, want 1", got)
	}
}

// TestSizes keeps the per-IP footprint and the shard padding honest.
func TestSizes(t *testing.T) {
	if got := unsafe.Sizeof(entry{}) + unsafe.Sizeof(key{}); got > 56 {
		t.Errorf("key+entry is %d bytes, want at most 56", got)
	}
	if got := unsafe.Sizeof(shard{}); got%64 != 0 {
		t.Errorf("shard is %d bytes, want a multiple of a cache line", got)
	}
}
