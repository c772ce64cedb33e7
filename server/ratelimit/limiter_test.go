package ratelimit

import (
	"net/netip"
	"testing"
	"time"
)

// action is one thing that happens to the IP under test.
type action uint8

const (
	check action = iota
	fail
	succeed
)

func (a action) String() string {
	return [...]string{"Check", "Failure", "Success"}[a]
}

// step advances the fake clock, then acts; for check and fail the decision
// returned must equal want.
type step struct {
	advance time.Duration
	do      action
	times   int // how often to act; 0 means once, and want is for the last
	want    Decision
}

var (
	allow = Decision{}
	slow  = Decision{Verdict: Slow, Delay: time.Second}
)

func blockFor(d time.Duration) Decision { return Decision{Verdict: Block, RetryAfter: d} }

func TestLimiterDecisions(t *testing.T) {
	// testConfig: Window 1m, suspicious at 3, blocked at 5 for 10m.
	window := time.Minute
	// span is how long the ring remembers a failure at most: Window plus
	// one slot (plus nanoseconds of rounding).
	span := time.Duration(slotCount * slotWidthFor(int64(window)))

	tests := []struct {
		name  string
		steps []step
	}{
		{
			name:  "unknown IP is allowed",
			steps: []step{{do: check, want: allow}},
		},
		{
			name: "failures below SuspiciousAfter are allowed",
			steps: []step{
				{do: fail, times: 2, want: allow},
				{do: check, want: allow},
			},
		},
		{
			name: "suspicious after SuspiciousAfter failures",
			steps: []step{
				{do: fail, times: 2, want: allow},
				{do: fail, want: slow},
				{do: check, want: slow},
			},
		},
		{
			name: "failures spread within the Window add up",
			steps: []step{
				{do: fail, want: allow},
				{advance: 25 * time.Second, do: fail, want: allow},
				{advance: 25 * time.Second, do: fail, want: slow},
			},
		},
		{
			name: "blocked after BlockAfter failures with exact RetryAfter",
			steps: []step{
				{do: fail, times: 4, want: slow},
				{do: fail, want: blockFor(10 * time.Minute)},
				{do: check, want: blockFor(10 * time.Minute)},
				{advance: 4*time.Minute + 1500*time.Millisecond, do: check, want: blockFor(5*time.Minute + 58500*time.Millisecond)},
			},
		},
		{
			name: "failures are remembered for the whole Window",
			steps: []step{
				{do: fail, times: 2, want: allow},
				{advance: window, do: fail, want: slow},
			},
		},
		{
			name: "failures decay after the Window",
			steps: []step{
				{do: fail, times: 2, want: allow},
				{advance: span, do: fail, want: allow},
				{do: fail, want: allow},
				{do: fail, want: slow},
			},
		},
		{
			name: "failures decay one slot at a time",
			steps: []step{
				{do: fail, times: 2, want: allow},
				{advance: window / 2, do: fail, times: 2, want: slow},
				// The first two have left the ring, the last two not.
				{advance: span - window/2, do: fail, want: slow},
			},
		},
		{
			name: "suspicion expires before the sweep",
			steps: []step{
				{do: fail, times: 3, want: slow},
				{advance: window, do: check, want: slow},
				{advance: span - window, do: check, want: allow},
			},
		},
		{
			name: "block expires before the sweep",
			steps: []step{
				{do: fail, times: 5, want: blockFor(10 * time.Minute)},
				{advance: 10*time.Minute - time.Nanosecond, do: check, want: blockFor(time.Nanosecond)},
				{advance: time.Nanosecond, do: check, want: allow},
				{do: fail, want: allow},
			},
		},
		{
			name: "failures during a block do not lengthen it",
			steps: []step{
				{do: fail, times: 5, want: blockFor(10 * time.Minute)},
				{advance: 3 * time.Minute, do: fail, times: 20, want: blockFor(7 * time.Minute)},
			},
		},
		{
			name: "success clears suspicion",
			steps: []step{
				{do: fail, times: 3, want: slow},
				{do: succeed},
				{do: check, want: allow},
			},
		},
		{
			name: "success keeps the failures counted toward a block",
			steps: []step{
				{do: fail, times: 3, want: slow},
				{do: succeed},
				{do: fail, want: slow},
				{do: succeed},
				{do: fail, want: blockFor(10 * time.Minute)},
			},
		},
		{
			name: "success does not clear a block",
			steps: []step{
				{do: fail, times: 5, want: blockFor(10 * time.Minute)},
				{do: succeed},
				{advance: time.Minute, do: check, want: blockFor(9 * time.Minute)},
			},
		},
		{
			name: "success on an unknown IP changes nothing",
			steps: []step{
				{do: succeed},
				{do: check, want: allow},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, clk := newTestLimiter(t, testConfig())
			ip := netip.MustParseAddr("198.51.100.7")
			for i, s := range tt.steps {
				clk.Step(s.advance)
				var got Decision
				for range max(s.times, 1) {
					switch s.do {
					case check:
						got = l.Check(ip)
					case fail:
						got = l.Failure(ip)
					case succeed:
						l.Success(ip)
					}
				}
				if s.do != succeed && got != s.want {
					t.Fatalf("step %d: after %v, %v×%d = %+v, want %+v", i, s.advance, s.do, max(s.times, 1), got, s.want)
				}
			}
		})
	}
}

// TestLimiterShortBlockReblocks covers a BlockDuration shorter than the
// Window: the failures are still counted when the block ends, so the next
// failure blocks again at once.
func TestLimiterShortBlockReblocks(t *testing.T) {
	cfg := testConfig()
	cfg.BlockDuration = 10 * time.Second
	l, clk := newTestLimiter(t, cfg)
	ip := netip.MustParseAddr("2001:db8::7")
	failN(l, ip, 5)
	clk.Step(10 * time.Second)
	if got := l.Check(ip); got != slow {
		t.Fatalf("Check after block = %+v, want Slow: the failures are still counted", got)
	}
	if got := l.Failure(ip); got != blockFor(10*time.Second) {
		t.Fatalf("Failure after block = %+v, want a new 10s block", got)
	}
	if got := l.Stats().BlocksTotal; got != 2 {
		t.Errorf("BlocksTotal = %d, want 2", got)
	}
}

func TestCheckNeverInserts(t *testing.T) {
	l, _ := newTestLimiter(t, testConfig())
	l.Failure(nthAddr(0)) // so that not every shard is empty
	for i := 1; i < 10_000; i++ {
		if d := l.Check(nthAddr(i)); d != allow {
			t.Fatalf("Check(%v) = %+v, want Allow", nthAddr(i), d)
		}
		l.Success(nthAddr(i))
	}
	if got := l.Stats().Tracked; got != 1 {
		t.Errorf("Tracked = %d after Checks of untracked IPs, want 1", got)
	}
}

func TestAddressForms(t *testing.T) {
	tests := []struct {
		name     string
		failAs   netip.Addr
		checkAs  netip.Addr
		sameSlot bool
	}{
		{
			name:     "IPv4-mapped IPv6 is the same client as IPv4",
			failAs:   netip.MustParseAddr("::ffff:198.51.100.7"),
			checkAs:  netip.MustParseAddr("198.51.100.7"),
			sameSlot: true,
		},
		{
			name:     "zone is ignored",
			failAs:   netip.MustParseAddr("fe80::1%eth0"),
			checkAs:  netip.MustParseAddr("fe80::1"),
			sameSlot: true,
		},
		{
			name:     "unparsable peers (zero Addr) share one entry",
			failAs:   netip.Addr{},
			checkAs:  netip.Addr{},
			sameSlot: true,
		},
		{
			name:    "neighbouring IPv6 addresses are separate",
			failAs:  netip.MustParseAddr("2001:db8::1"),
			checkAs: netip.MustParseAddr("2001:db8::2"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, _ := newTestLimiter(t, testConfig())
			failN(l, tt.failAs, 5)
			blocked := l.Check(tt.checkAs).Verdict == Block
			if blocked != tt.sameSlot {
				t.Errorf("Check(%v) blocked = %v after blocking %v, want %v", tt.checkAs, blocked, tt.failAs, tt.sameSlot)
			}
		})
	}
}
