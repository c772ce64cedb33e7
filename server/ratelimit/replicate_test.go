package ratelimit

import (
	"math"
	"net/netip"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// fleetOf returns n limiters on one fake clock, each replicating into a
// list of changes that the test delivers by hand.
func fleetOf(t *testing.T, n int, cfg Config) ([]*Limiter, [][]Change, *clocktesting.FakeClock) {
	t.Helper()
	clk := clocktesting.NewFakeClock(t0)
	ls := make([]*Limiter, n)
	out := make([][]Change, n)
	for i := range ls {
		l, err := New(cfg, clk)
		if err != nil {
			t.Fatal(err)
		}
		l.Replicate(Origin(i+1), func(c Change) { out[i] = append(out[i], c) })
		ls[i] = l
	}
	return ls, out, clk
}

func recordOf(c Change) *Record {
	return &Record{IP: c.IP, BlockedUntil: c.BlockedUntil, SuspiciousUntil: c.SuspiciousUntil, Counters: []Counter{c.Own}}
}

// TestMergeSpreadFailuresBlock: BlockAfter failures spread over three
// replicas block the IP once the replicas have exchanged their changes,
// whatever the order, and delivering every change twice counts nothing twice.
func TestMergeSpreadFailuresBlock(t *testing.T) {
	cfg := testConfig() // BlockAfter 5, SuspiciousAfter 3
	ip := netip.MustParseAddr("198.51.100.7")
	for _, tt := range []struct {
		name    string
		reverse bool
		twice   bool
	}{
		{name: "in order"},
		{name: "reversed", reverse: true},
		{name: "every update twice", twice: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ls, out, _ := fleetOf(t, 3, cfg)
			// 2 + 1 + 1 failures: 4, one short of a block.
			failN(ls[0], ip, 2)
			failN(ls[1], ip, 1)
			failN(ls[2], ip, 1)
			deliver := func() {
				for from := range ls {
					changes := out[from]
					out[from] = nil
					for i := range changes {
						c := changes[i]
						if tt.reverse {
							c = changes[len(changes)-1-i]
						}
						for to := range ls {
							if to != from {
								ls[to].Merge(recordOf(c))
								if tt.twice {
									ls[to].Merge(recordOf(c))
								}
							}
						}
					}
				}
			}
			deliver()
			for i, l := range ls {
				if d := l.Check(ip); d.Verdict == Block {
					t.Fatalf("replica %d blocks after 4 failures in the fleet: %+v", i, d)
				}
			}
			// The fifth failure, anywhere, blocks everywhere.
			if d := ls[1].Failure(ip); d.Verdict != Block {
				t.Fatalf("fifth failure on replica 1 = %+v, want Block", d)
			}
			deliver()
			for i, l := range ls {
				if d := l.Check(ip); d.Verdict != Block {
					t.Errorf("replica %d: %+v after the fleet's fifth failure, want Block", i, d)
				}
			}
		})
	}
}

// TestMergeFullState: a replica started later takes the whole state from a
// peer's Records, and merging it again changes nothing.
func TestMergeFullState(t *testing.T) {
	cfg := testConfig()
	ls, _, clk := fleetOf(t, 2, cfg)
	blocked, counted := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("2001:db8::5")
	failN(ls[0], blocked, cfg.BlockAfter)
	failN(ls[0], counted, 2)
	clk.Step(time.Minute)
	failN(ls[1], counted, 2)
	for _, r := range ls[0].Records(0) {
		ls[1].Merge(&r)
	}
	late, err := New(cfg, clk)
	if err != nil {
		t.Fatal(err)
	}
	late.Replicate(9, nil)
	for range 2 {
		for _, r := range ls[1].Records(0) {
			late.Merge(&r)
		}
	}
	if d := late.Check(blocked); d.Verdict != Block || d.RetryAfter != cfg.BlockDuration-time.Minute {
		t.Errorf("late replica: %v reads %+v, want Block for %v", blocked, d, cfg.BlockDuration-time.Minute)
	}
	// 2 (replica 0, a minute ago, still in the ring's span or not) + 2:
	// one more failure here must not block before the fleet has 5.
	rec := late.Records(0)
	if len(rec) != 2 || rec[0].IP != blocked {
		t.Fatalf("late replica's records = %+v, want the block first and the counted IP", rec)
	}
}

// TestMergeRefusesWhatCannotBeTrusted: far-future times are clamped, the
// local origin is never taken from a peer, and a full table keeps its
// blocks against merged newcomers.
func TestMergeRefusesWhatCannotBeTrusted(t *testing.T) {
	cfg := testConfig()
	cfg.MaxTracked = 64
	l, clk := newTestLimiter(t, cfg)
	l.Replicate(1, nil)
	wall := clk.Now().UnixNano()
	far := netip.MustParseAddr("192.0.2.1")
	l.Merge(&Record{IP: far, BlockedUntil: wall + int64(1000*time.Hour)})
	if d := l.Check(far); d.Verdict != Block || d.RetryAfter != cfg.BlockDuration {
		t.Errorf("far-future block reads %+v, want Block clamped to %v", d, cfg.BlockDuration)
	}
	self := netip.MustParseAddr("192.0.2.2")
	var slots [SlotCount]uint16
	slots[0] = 60000
	if l.Merge(&Record{IP: self, Counters: []Counter{{Origin: 1, NewestSlot: 0, Slots: slots}}}) {
		t.Error("a record holding only the local origin's counter was taken")
	}
	for i, newest := range []int64{math.MinInt64, math.MaxInt64, -1} {
		slots := [SlotCount]uint16{60000, 60000, 60000, 60000, 60000, 60000, 60000, 60000}
		ip := netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)})
		l.Merge(&Record{IP: ip, Counters: []Counter{{Origin: 7, NewestSlot: newest, Slots: slots}}})
		if newest == math.MaxInt64 {
			// From the future: counted as now, and it blocks.
			if d := l.Check(ip); d.Verdict != Block {
				t.Errorf("a ring from the future did not count as now: %+v", d)
			}
		} else if d := l.Check(ip); d.Verdict != Allow {
			t.Errorf("a ring ending at slot %d counted: %+v", newest, d)
		}
	}
	for i := range 10 * cfg.MaxTracked {
		l.Merge(&Record{IP: nthAddr(i), SuspiciousUntil: wall + int64(time.Second)})
	}
	if st := l.Stats(); st.Tracked > cfg.MaxTracked {
		t.Errorf("Tracked = %d after a merged flood, cap %d", st.Tracked, cfg.MaxTracked)
	}
	if d := l.Check(far); d.Verdict != Block {
		t.Errorf("the block was pushed out by merged newcomers: %+v", d)
	}
}
