package ratelimit

import (
	"net/netip"
	"sync"
	"testing"
	"time"
)

// TestCapHoldsUnderFlood sends a million failures from distinct IPv4 and
// IPv6 addresses, from several goroutines, at a table capped far lower.
func TestCapHoldsUnderFlood(t *testing.T) {
	const (
		maxTracked = 10_000
		flood      = 1_000_000
		workers    = 4
	)
	tests := []struct {
		name string
		// blocked and suspicious are set up before the flood; they must
		// survive it, because the newcomers are worth less than they are.
		blocked    []netip.Addr
		suspicious []netip.Addr
	}{
		{name: "plain flood"},
		{
			name:       "blocked and suspicious IPs survive unblocked newcomers",
			blocked:    []netip.Addr{netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("2001:db8:ffff::1")},
			suspicious: []netip.Addr{netip.MustParseAddr("198.51.100.2")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.MaxTracked = maxTracked
			l, clk := newTestLimiter(t, cfg)
			for _, ip := range tt.blocked {
				failN(l, ip, cfg.BlockAfter)
			}
			for _, ip := range tt.suspicious {
				failN(l, ip, cfg.SuspiciousAfter)
			}
			preexisting := len(tt.blocked) + len(tt.suspicious)

			var wg sync.WaitGroup
			for w := range workers {
				wg.Go(func() {
					for i := w; i < flood; i += workers {
						if i%100_000 == 0 {
							if n := l.Stats().Tracked; n > maxTracked {
								t.Errorf("after %d failures the table holds %d IPs, cap %d", i, n, maxTracked)
							}
						}
						l.Failure(nthAddr(i))
					}
				})
			}
			wg.Wait()

			st := l.Stats()
			if st.Tracked > maxTracked {
				t.Errorf("Tracked = %d, want at most %d", st.Tracked, maxTracked)
			}
			// Shards fill unevenly, so a few evictions come before the
			// cap; most of the table must still be in use.
			if st.Tracked < maxTracked*9/10 {
				t.Errorf("Tracked = %d, want close to the cap %d", st.Tracked, maxTracked)
			}
			// The clock stood still, so every evicted entry was live.
			if want := uint64(flood + preexisting - st.Tracked); st.EvictionsTotal != want {
				t.Errorf("EvictionsTotal = %d, want %d (inserted minus tracked)", st.EvictionsTotal, want)
			}
			if st.FailuresTotal != uint64(flood+len(tt.blocked)*cfg.BlockAfter+len(tt.suspicious)*cfg.SuspiciousAfter) {
				t.Errorf("FailuresTotal = %d, want every failure counted", st.FailuresTotal)
			}
			for _, ip := range tt.blocked {
				if d := l.Check(ip); d.Verdict != Block {
					t.Errorf("blocked %v reads %+v after the flood, want Block", ip, d)
				}
			}
			for _, ip := range tt.suspicious {
				if d := l.Check(ip); d.Verdict != Slow {
					t.Errorf("suspicious %v reads %+v after the flood, want Slow", ip, d)
				}
			}
			if st.Blocked != len(tt.blocked) {
				t.Errorf("Blocked = %d, want %d", st.Blocked, len(tt.blocked))
			}

			// Once the flood has aged out, a sweep empties the table
			// except for what is still blocked.
			clk.Step(2 * cfg.Window)
			l.sweep()
			if got := l.Stats().Tracked; got != len(tt.blocked) {
				t.Errorf("after the sweep Tracked = %d, want %d", got, len(tt.blocked))
			}
		})
	}
}

// TestEvictionPrefersIdleEntries checks that expired entries make room
// without being counted as evictions. With fewer newcomers than samples,
// every sample holds an idle entry, so the outcome is certain.
func TestEvictionPrefersIdleEntries(t *testing.T) {
	cfg := testConfig()
	cfg.MaxTracked = 64 // one shard
	l, clk := newTestLimiter(t, cfg)
	for i := range 64 {
		l.Failure(nthAddr(i))
	}
	clk.Step(2 * cfg.Window)
	for i := 64; i < 64+evictionSamples; i++ {
		l.Failure(nthAddr(i))
	}
	st := l.Stats()
	if st.Tracked != 64 || st.EvictionsTotal != 0 {
		t.Errorf("Tracked = %d, EvictionsTotal = %d; want 64 and 0", st.Tracked, st.EvictionsTotal)
	}
}

// TestBlockedEvictedOnlyWhenAllAreBlocked fills one shard with blocks: a
// new IP must still get in, and the block ending first goes.
func TestBlockedEvictedOnlyWhenAllAreBlocked(t *testing.T) {
	cfg := testConfig()
	cfg.MaxTracked = 64
	cfg.BlockAfter, cfg.SuspiciousAfter = 1, 1
	l, clk := newTestLimiter(t, cfg)
	for i := range 64 {
		l.Failure(nthAddr(i))
		clk.Step(time.Millisecond)
	}
	if d := l.Failure(nthAddr(1000)); d.Verdict != Block {
		t.Fatalf("newcomer = %+v, want Block", d)
	}
	st := l.Stats()
	if st.Tracked != 64 || st.EvictionsTotal != 1 || st.Blocked != 64 {
		t.Errorf("Stats = %+v; want 64 tracked, 64 blocked, 1 eviction", st)
	}
}

func TestShardCapacitiesAddUpToMaxTracked(t *testing.T) {
	for _, maxTracked := range []int{1, 7, 63, 64, 65, 1000, 4097, 100_000} {
		cfg := testConfig()
		cfg.MaxTracked = maxTracked
		l, _ := newTestLimiter(t, cfg)
		total := 0
		for i := range l.shards {
			if l.shards[i].capacity < 1 {
				t.Errorf("MaxTracked %d: shard %d has capacity %d", maxTracked, i, l.shards[i].capacity)
			}
			total += l.shards[i].capacity
		}
		if total != maxTracked {
			t.Errorf("MaxTracked %d: shard capacities add up to %d", maxTracked, total)
		}
	}
}

// TestFloodCannotShieldAnAttacker: an address failing now and then while a
// flood of one-failure addresses from elsewhere churns the whole table is
// still blocked at its BlockAfter-th failure. With the oldest failure
// evicted first, a quarter of the table of newcomers between its attempts
// pushed it out again and again and it was never blocked (the abuse
// suite's all-together row: an IPv6 /64 made 20 failures unblocked).
func TestFloodCannotShieldAnAttacker(t *testing.T) {
	cfg := testConfig()
	cfg.MaxTracked, cfg.SuspiciousAfter, cfg.BlockAfter = 20_000, 5, 10
	l, clk := newTestLimiter(t, cfg)
	n := 0
	flood := func(k int) {
		for range k {
			l.Failure(nthAddr(n))
			n++
		}
	}
	flood(cfg.MaxTracked)
	attacker := netip.MustParseAddr("2001:db8:abcd:2::7")
	failN(l, attacker, 2)
	// The newcomers' failures are newer than the attacker's.
	clk.Step(cfg.Window / 8)
	for i := 3; i <= cfg.BlockAfter; i++ {
		flood(cfg.MaxTracked / 4)
		d := l.Failure(attacker)
		if want := Block; i == cfg.BlockAfter && d.Verdict != want {
			t.Fatalf("failure %d reads %v, want %v (%d evictions)", i, d.Verdict, want, l.Stats().EvictionsTotal)
		} else if i < cfg.BlockAfter && d.Verdict == Block {
			t.Fatalf("failure %d already blocks", i)
		}
	}
}
