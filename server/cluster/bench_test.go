package cluster

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/voicegateway/voicegateway/server/ratelimit"
)

// nthIP is a distinct IPv4 address for every n below 2^24.
func nthIP(n int) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(n)+0x0b000000)
	return netip.AddrFrom4(b)
}

func startFleet(t testing.TB, n int, cfg ratelimit.Config, pushPull time.Duration) []*replica {
	var addrs []string
	for range n {
		addrs = append(addrs, freePortTB(t))
	}
	var rs []*replica
	for _, a := range addrs {
		rs = append(rs, startReplicaCfg(t, Config{Listen: a, Peers: addrs, FleetKey: testKey, PushPullInterval: pushPull}, cfg))
	}
	waitForTB(t, 10*time.Second, "the fleet formed", func() bool {
		for _, r := range rs {
			if len(r.peer.Members()) != n || !r.peer.Settled() {
				return false
			}
		}
		return true
	})
	return rs
}

func sentBytes(rs []*replica) (broadcast, state uint64) {
	for _, r := range rs {
		broadcast += r.metrics.sentBytes[trafficBroadcast].Load()
		state += r.metrics.sentBytes[trafficState].Load()
	}
	return broadcast, state
}

// BenchmarkBlockConvergence: a block decided on one of three replicas,
// until the two others refuse the address (ns/op is the convergence time).
func BenchmarkBlockConvergence(b *testing.B) {
	rs := startFleet(b, 3, ratelimit.Config{BlockAfter: 10, SuspiciousAfter: 5}, 0)
	i := 0
	for b.Loop() {
		ip := nthIP(i)
		i++
		for range 10 {
			rs[0].limiter.Failure(ip)
		}
		for rs[1].limiter.Check(ip).Verdict != ratelimit.Block || rs[2].limiter.Check(ip).Verdict != ratelimit.Block {
			time.Sleep(time.Millisecond)
		}
	}
}

// TestGossipBandwidth measures, for 1k, 10k and 100k tracked IPs spread
// over three replicas: the gossip while they are recorded (each replica
// records a third of them, as fast as it can), the time until every
// replica holds every IP, the size of one full state, and so the
// anti-entropy's steady bytes per second at the 30 s period. It also checks
// that a flood larger than the cap stays within it on every replica.
// Run with -v to read the figures (docs/benchmarks.md).
func TestGossipBandwidth(t *testing.T) {
	if os.Getenv("VOICEGATEWAY_GOSSIP_BENCH") == "" {
		t.Skip("a measurement of a minute or more: VOICEGATEWAY_GOSSIP_BENCH=1 go test -run TestGossipBandwidth -v ./server/cluster")
	}
	for _, tracked := range []int{1_000, 10_000, 100_000} {
		t.Run(fmt.Sprint(tracked), func(t *testing.T) {
			// A push/pull every 2 s so that convergence is measured in
			// seconds; the steady figure is scaled to the real 30 s.
			// A window long enough that no failure expires while they spread.
			cfg := ratelimit.Config{MaxTracked: 2 * tracked, BlockAfter: 10, SuspiciousAfter: 5, Window: 10 * time.Minute}
			rs := startFleet(t, 3, cfg, 2*time.Second)
			start := time.Now()
			var wg sync.WaitGroup
			for k, r := range rs {
				wg.Go(func() {
					for i := k; i < tracked; i += len(rs) {
						r.limiter.Failure(nthIP(i))
					}
				})
			}
			wg.Wait()
			recorded := time.Since(start)
			waitFor(t, 2*time.Minute, "every replica holds every IP", func() bool {
				for _, r := range rs {
					if r.limiter.Stats().Tracked < tracked {
						return false
					}
				}
				return true
			})
			converged := time.Since(start)
			broadcast, state := sentBytes(rs)
			stateBytes := rs[0].metrics.stateBytes.Load()
			if stateBytes == 0 {
				b, _ := encodeState(rs[0].limiter.Records(MaxStateRecords))
				stateBytes = int64(len(b))
			}
			// Every 30 s each replica starts one push/pull: its state out,
			// its peer's back.
			steady := float64(2*stateBytes) / pushPullInterval.Seconds()
			t.Logf("%d IPs over 3 replicas: recorded in %v, on every replica after %v; gossip while converging %.0f KB/s broadcast + %.0f KB/s push/pull (all 3, 2 s period); full state %d bytes (%.0f B/IP); steady anti-entropy %.1f KB/s per replica at 30 s",
				tracked, recorded.Round(time.Millisecond), converged.Round(time.Millisecond),
				float64(broadcast)/converged.Seconds()/1e3, float64(state)/converged.Seconds()/1e3,
				stateBytes, float64(stateBytes)/float64(tracked), steady/1e3)
		})
	}
}

// TestFloodStaysWithinCap: a million failures from distinct addresses,
// spread over three replicas capped at 10k IPs each, leave every replica
// within its cap, and a block made before the flood survives it
// everywhere. Prints the gossip the flood caused.
func TestFloodStaysWithinCap(t *testing.T) {
	if testing.Short() {
		t.Skip("a million failures")
	}
	const (
		maxTracked = 10_000
		flood      = 1_000_000
	)
	cfg := ratelimit.Config{MaxTracked: maxTracked, BlockAfter: 10, SuspiciousAfter: 5}
	rs := startFleet(t, 3, cfg, 0)
	blocked := netip.MustParseAddr("198.51.100.1")
	for range 10 {
		rs[1].limiter.Failure(blocked)
	}
	waitFor(t, 2*time.Second, "the block everywhere", func() bool {
		return rs[0].limiter.Check(blocked).Verdict == ratelimit.Block && rs[2].limiter.Check(blocked).Verdict == ratelimit.Block
	})
	start := time.Now()
	var wg sync.WaitGroup
	for k, r := range rs {
		wg.Go(func() {
			for i := k; i < flood; i += len(rs) {
				r.limiter.Failure(nthIP(i))
			}
		})
	}
	wg.Wait()
	time.Sleep(2 * time.Second) // let the queues drain
	elapsed := time.Since(start)
	broadcast, _ := sentBytes(rs)
	var dropped uint64
	for i, r := range rs {
		st := r.limiter.Stats()
		if st.Tracked > maxTracked {
			t.Errorf("replica %d holds %d IPs, cap %d", i, st.Tracked, maxTracked)
		}
		if r.limiter.Check(blocked).Verdict != ratelimit.Block {
			t.Errorf("replica %d lost the block in the flood", i)
		}
		if q := r.peer.blocks.NumQueued() + r.peer.failures.NumQueued(); q > 2*maxQueued {
			t.Errorf("replica %d queues %d broadcasts, bound %d", i, q, 2*maxQueued)
		}
		dropped += r.metrics.queueDropped.Load()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("1M failures over 3 replicas capped at %d: within the cap on all 3; gossip %.0f KB/s for all 3 over %v (%.0f KB/s per replica); %d queued changes dropped at the queue bound",
		maxTracked, float64(broadcast)/elapsed.Seconds()/1e3, elapsed.Round(time.Millisecond), float64(broadcast)/elapsed.Seconds()/3e3, dropped)
}

// BenchmarkFailureGossiped is a failed authentication with the fleet on:
// the limiter's Failure plus the change encoded and queued for gossip.
func BenchmarkFailureGossiped(b *testing.B) {
	l, err := ratelimit.New(ratelimit.Config{BlockAfter: 65535, SuspiciousAfter: 65535}, nil)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := New(Config{Listen: "127.0.0.1:1", FleetKey: testKey}, l, NewMetrics(), logr.Discard()); err != nil {
		b.Fatal(err)
	}
	b.Run("existing_ip", func(b *testing.B) {
		ip := nthIP(1)
		b.ReportAllocs()
		for b.Loop() {
			l.Failure(ip)
		}
	})
	b.Run("new_ips", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			l.Failure(nthIP(i % 1_000_000))
			i++
		}
	})
}
