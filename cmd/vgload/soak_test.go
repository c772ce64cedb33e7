package main

import (
	"math"
	"math/rand/v2"
	"net/netip"
	"testing"
)

func TestFitSlope(t *testing.T) {
	line := func(n int, f func(i int) (t, x, y float64)) (ts, xs, ys []float64) {
		for i := range n {
			a, b, c := f(i)
			ts, xs, ys = append(ts, a), append(xs, b), append(ys, c)
		}
		return ts, xs, ys
	}
	tests := map[string]struct {
		t, x, y []float64
		want    float64
	}{
		"flat": func() (tc struct {
			t, x, y []float64
			want    float64
		}) {
			tc.t, tc.x, tc.y = line(10, func(i int) (float64, float64, float64) { return float64(i * 10), 50, 7 })
			return tc
		}(),
		"growing 2 per second, sessions constant": func() (tc struct {
			t, x, y []float64
			want    float64
		}) {
			tc.t, tc.x, tc.y = line(10, func(i int) (float64, float64, float64) { return float64(i), 50, 100 + 2*float64(i) })
			tc.want = 2
			return tc
		}(),
		"sessions swing, no drift": func() (tc struct {
			t, x, y []float64
			want    float64
		}) {
			// y follows the live sessions only, which happen to rise: a fit
			// on time alone would see a trend.
			sessions := []float64{10, 30, 20, 40, 60, 50, 70, 90, 80, 100}
			tc.t, tc.x, tc.y = line(10, func(i int) (float64, float64, float64) {
				return float64(i), sessions[i], 1000 + 3*sessions[i]
			})
			return tc
		}(),
		"sessions swing, with drift": func() (tc struct {
			t, x, y []float64
			want    float64
		}) {
			sessions := []float64{50, 20, 70, 40, 90, 10, 60, 30, 80, 55}
			tc.t, tc.x, tc.y = line(10, func(i int) (float64, float64, float64) {
				return float64(i), sessions[i], 1000 + 3*sessions[i] + 0.5*float64(i)
			})
			tc.want = 0.5
			return tc
		}(),
		"too few points": {t: []float64{0, 1, 2}, x: []float64{1, 1, 1}, y: []float64{0, 5, 10}, want: 0},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, se := fitSlope(tc.t, tc.x, tc.y)
			if math.Abs(got-tc.want) > 1e-6 {
				t.Fatalf("fitSlope = %v, want %v", got, tc.want)
			}
			// Exact lines leave no residual: no uncertainty.
			if se > 1e-6 {
				t.Fatalf("standard error %v for an exact fit", se)
			}
		})
	}
}

func TestDriftPerDay(t *testing.T) {
	var samples []SoakSample
	for i := range 10 {
		samples = append(samples, SoakSample{AtS: float64(i * 10), MemStats: MemStats{HeapInuseBytes: uint64(1e6 + i*10), Sessions: 50}})
	}
	// One byte per second is 0.0864 MB a day.
	got := driftPerDay(samples, func(m MemStats) float64 { return float64(m.HeapInuseBytes) / 1e6 })
	if math.Abs(got.PerDay-0.0864) > 1e-9 || got.Samples != 10 {
		t.Fatalf("drift %+v, want 0.0864 MB/day over 10 samples", got)
	}
}

func TestPickKind(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	counts := map[string]int{}
	for range 20000 {
		counts[pickKind(r, false)]++
	}
	if counts["bad-auth"] != 0 {
		t.Fatalf("bad-auth picked %d times without an API key", counts["bad-auth"])
	}
	for _, k := range soakKinds {
		if k.name != "bad-auth" && counts[k.name] == 0 {
			t.Fatalf("kind %s never picked: %v", k.name, counts)
		}
	}
	if counts["talk"] < counts["hang-up"] {
		t.Fatalf("shares not respected: %v", counts)
	}
}

func TestDocAddr(t *testing.T) {
	v4 := netip.MustParsePrefix("198.18.0.0/15")
	v6 := netip.MustParsePrefix("2001:db8::/32")
	seen := map[netip.Addr]bool{}
	nets := map[netip.Prefix]bool{}
	for n := range uint64(300_000) {
		a := docAddr(n)
		if !v4.Contains(a) && !v6.Contains(a) {
			t.Fatalf("docAddr(%d) = %v, outside the documentation ranges", n, a)
		}
		seen[a] = true
		if a.Is6() {
			p, _ := a.Prefix(64)
			nets[p] = true
		}
	}
	// 2^17 IPv4 addresses, the rest IPv6: all distinct below 2^18.
	if len(seen) != 300_000-(150_000-1<<17) {
		t.Fatalf("%d distinct addresses from 300,000", len(seen))
	}
	// The gateway counts an IPv6 client by its /64: each address is in one
	// of its own.
	if len(nets) != 150_000 {
		t.Fatalf("%d IPv6 /64s for 150,000 addresses", len(nets))
	}
}

// Noise around a flat line gives a slope near zero with a standard error
// that covers it: the report says "noise" rather than "leak".
func TestFitSlopeNoise(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	var ts, xs, ys []float64
	for i := range 200 {
		ts = append(ts, float64(i*10))
		xs = append(xs, 40+float64(r.IntN(20)))
		ys = append(ys, 4.6+0.3*xs[i]/50+r.NormFloat64()*0.07)
	}
	slope, se := fitSlope(ts, xs, ys)
	if se <= 0 || math.Abs(slope) > 3*se {
		t.Fatalf("slope %v ± %v on pure noise", slope, se)
	}
}
