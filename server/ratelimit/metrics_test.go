package ratelimit

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestCollect(t *testing.T) {
	cfg := testConfig()
	cfg.MaxTracked = 64 // one shard, so evictions are easy to cause
	l, clk := newTestLimiter(t, cfg)

	failN(l, nthAddr(0), cfg.BlockAfter) // 5 failures, 1 block
	failN(l, nthAddr(1), cfg.BlockAfter) // 5 failures, 1 block
	clk.Step(cfg.BlockDuration)          // both blocks end
	l.sweep()                            // and both entries go
	failN(l, nthAddr(2), cfg.BlockAfter+1)
	for i := 3; i < 3+64; i++ {
		l.Failure(nthAddr(i))
	}
	// 64 tracked: the block and 63 of the 64 newcomers; one newcomer was
	// evicted to make room, never the block.

	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(l); err != nil {
		t.Fatalf("Register: %v", err)
	}
	want := `
# HELP voicegateway_ratelimit_blocked_ips Client IPs blocked now for failed authentication.
# TYPE voicegateway_ratelimit_blocked_ips gauge
voicegateway_ratelimit_blocked_ips 1
# HELP voicegateway_ratelimit_blocks_total Blocks started because of failed authentication.
# TYPE voicegateway_ratelimit_blocks_total counter
voicegateway_ratelimit_blocks_total 3
# HELP voicegateway_ratelimit_evictions_total Tracked IPs evicted because the table was full; if this grows, raise the max tracked IPs.
# TYPE voicegateway_ratelimit_evictions_total counter
voicegateway_ratelimit_evictions_total 1
# HELP voicegateway_ratelimit_failures_total Failed authentication attempts recorded.
# TYPE voicegateway_ratelimit_failures_total counter
voicegateway_ratelimit_failures_total 80
# HELP voicegateway_ratelimit_tracked_ips Client IPs tracked for failed authentication.
# TYPE voicegateway_ratelimit_tracked_ips gauge
voicegateway_ratelimit_tracked_ips 64
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	if err := testutil.CollectAndCompare(l, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.CollectAndLint(l); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %+v", err, problems)
	}
}
