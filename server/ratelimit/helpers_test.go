package ratelimit

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// t0 is an arbitrary start for fake clocks, with nanoseconds so that
// round trips through JSON are seen to keep them.
var t0 = time.Date(2025, 3, 14, 9, 26, 53, 589793238, time.UTC)

// testConfig is small enough to reason about in a table.
func testConfig() Config {
	return Config{
		Window:          time.Minute,
		SuspiciousAfter: 3,
		BlockAfter:      5,
		BlockDuration:   10 * time.Minute,
		SuspiciousDelay: time.Second,
		MaxTracked:      1000,
		CleanupInterval: 30 * time.Second,
	}
}

func newTestLimiter(t testing.TB, cfg Config) (*Limiter, *clocktesting.FakeClock) {
	t.Helper()
	clk := clocktesting.NewFakeClock(t0)
	l, err := New(cfg, clk)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return l, clk
}

// nthAddr returns a distinct address for every n: IPv4 for even n,
// IPv6 for odd n.
func nthAddr(n int) netip.Addr {
	if n%2 == 0 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(n/2)+0x0b000000) // from 11.0.0.0
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	b[0], b[1], b[2], b[3] = 0x20, 0x01, 0x0d, 0xb8 // 2001:db8::/32
	binary.BigEndian.PutUint64(b[8:], uint64(n))
	return netip.AddrFrom16(b)
}

func failN(l *Limiter, ip netip.Addr, n int) Decision {
	var d Decision
	for range n {
		d = l.Failure(ip)
	}
	return d
}
