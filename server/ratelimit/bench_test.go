package ratelimit

import (
	"runtime"
	"testing"
	"time"

	"k8s.io/utils/clock"
)

// Benchmarks use the real clock, whose cost is part of Check.

func newBenchLimiter(b *testing.B, cfg Config) *Limiter {
	b.Helper()
	l, err := New(cfg, clock.RealClock{})
	if err != nil {
		b.Fatal(err)
	}
	return l
}

func BenchmarkCheck(b *testing.B) {
	const tracked = 10_000
	l := newBenchLimiter(b, Config{})
	for i := range tracked {
		l.Failure(nthAddr(i))
	}

	b.Run("tracked", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			l.Check(nthAddr(i % tracked))
			i++
		}
	})
	b.Run("untracked", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			l.Check(nthAddr(tracked + i%tracked))
			i++
		}
	})
	b.Run("untracked_empty_table", func(b *testing.B) {
		empty := newBenchLimiter(b, Config{})
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			empty.Check(nthAddr(i % tracked))
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			// Half tracked, half not, spread over every shard.
			i := 0
			for pb.Next() {
				l.Check(nthAddr(i % (2 * tracked)))
				i += 7
			}
		})
	})
	b.Run("parallel_same_ip", func(b *testing.B) {
		b.ReportAllocs()
		ip := nthAddr(1)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				l.Check(ip)
			}
		})
	})
}

func BenchmarkFailure(b *testing.B) {
	b.Run("existing_ip", func(b *testing.B) {
		l := newBenchLimiter(b, Config{BlockAfter: 65535, SuspiciousAfter: 65535})
		ip := nthAddr(1)
		b.ReportAllocs()
		for b.Loop() {
			l.Failure(ip)
		}
	})
	b.Run("new_ip_table_full", func(b *testing.B) {
		// Every failure is a newcomer that must evict.
		l := newBenchLimiter(b, Config{MaxTracked: 10_000})
		for i := range 10_000 {
			l.Failure(nthAddr(i))
		}
		b.ReportAllocs()
		i := 10_000
		for b.Loop() {
			l.Failure(nthAddr(i))
			i++
		}
	})
	b.Run("parallel_new_ips", func(b *testing.B) {
		l := newBenchLimiter(b, Config{MaxTracked: 10_000})
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := int(time.Now().UnixNano() & 0xffffff)
			for pb.Next() {
				l.Failure(nthAddr(i))
				i++
			}
		})
	})
}

// BenchmarkMemoryPerIP reports the heap held per tracked IP once 100k IPs,
// half IPv4 and half IPv6, have failed once.
func BenchmarkMemoryPerIP(b *testing.B) {
	const ips = 100_000
	var perIP float64
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)

		l := newBenchLimiter(b, Config{MaxTracked: 2 * ips})
		for i := range ips {
			l.Failure(nthAddr(i))
		}

		runtime.GC()
		runtime.ReadMemStats(&after)
		if got := l.Stats().Tracked; got != ips {
			b.Fatalf("tracked %d IPs, want %d", got, ips)
		}
		perIP = float64(after.HeapAlloc-before.HeapAlloc) / ips
		runtime.KeepAlive(l)
	}
	b.ReportMetric(perIP, "B/ip")
}

// BenchmarkStats measures a metrics scrape of a full default-sized table,
// which counts blocked IPs by looking at every entry.
func BenchmarkStats(b *testing.B) {
	l := newBenchLimiter(b, Config{})
	for i := range DefaultMaxTracked {
		l.Failure(nthAddr(i))
	}
	b.ReportAllocs()
	for b.Loop() {
		l.Stats()
	}
}

// BenchmarkMergedMemoryPerIP reports the heap held per tracked IP on one
// replica of three once 100k IPs failed once on each replica: the local
// entry plus the two other replicas' counters merged into it.
func BenchmarkMergedMemoryPerIP(b *testing.B) {
	const ips = 100_000
	var perIP float64
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)

		l := newBenchLimiter(b, Config{MaxTracked: 2 * ips})
		l.Replicate(1, nil)
		wall := time.Now().UnixNano()
		slot := wall / slotWidthFor(int64(DefaultWindow))
		var slots [SlotCount]uint16
		slots[slot&slotMask] = 1
		r := Record{Counters: []Counter{{Origin: 2, NewestSlot: slot, Slots: slots}, {Origin: 3, NewestSlot: slot, Slots: slots}}}
		for i := range ips {
			l.Failure(nthAddr(i))
			r.IP = nthAddr(i)
			l.Merge(&r)
		}

		runtime.GC()
		runtime.ReadMemStats(&after)
		if got := l.Stats().Tracked; got != ips {
			b.Fatalf("tracked %d IPs, want %d", got, ips)
		}
		perIP = float64(after.HeapAlloc-before.HeapAlloc) / ips
		runtime.KeepAlive(l)
	}
	b.ReportMetric(perIP, "B/ip")
}
