package main

import (
	"context"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/voicegateway/voicegateway/server/admin/adminapi"
)

// BenchmarkIdleSessionMemory measures what an idle session costs the server
// process: 1,000 sessions are opened by this (separate) client process, and
// the server's live heap, goroutine stacks and RSS are compared before and
// after, each sampled after a forced GC through /debug/memstats. The aim is
// ≤ 8 KiB per idle session (docs/benchmarks.md).
func BenchmarkIdleSessionMemory(b *testing.B) {
	sessions := 1000
	if n, err := strconv.Atoi(os.Getenv("VOICEGATEWAY_BENCH_SESSIONS")); err == nil && n > 0 {
		sessions = n
	}
	p := startProcess(b, "--session-limit", strconv.Itoa(sessions+10), "--idle-timeout", "10m")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for i := 0; i < b.N; i++ {
		before, rssBefore := memstats(b, p), rss(b, p)
		conns := make([]*websocket.Conn, 0, sessions)
		for j := 0; j < sessions; j++ {
			c, resp, err := p.dial(ctx, j%2 == 0)
			if resp != nil && resp.Body != nil {
				resp.Body.Close()
			}
			if err != nil {
				b.Fatalf("session %d: %v", j, err)
			}
			if _, _, err := c.Read(ctx); err != nil { // session.created
				b.Fatalf("session %d: %v", j, err)
			}
			conns = append(conns, c)
		}
		// Idle means idle: past the writer's linger (2 s) and the
		// reader's parking (2 s of quiet, found by a sweep every second),
		// when an idle session holds no goroutine.
		time.Sleep(5 * time.Second)
		after, rssAfter := memstats(b, p), rss(b, p)
		if path := os.Getenv("VOICEGATEWAY_BENCH_HEAP_PROFILE"); path != "" {
			// For `go tool pprof -sample_index=inuse_space`: where idle sessions' memory goes.
			code, profile := p.adminGet("/debug/pprof/heap?gc=1")
			if code != http.StatusOK || os.WriteFile(path, profile, 0o644) != nil {
				b.Fatalf("heap profile: %d", code)
			}
		}
		if after.Sessions != sessions {
			b.Fatalf("server holds %d sessions, want %d", after.Sessions, sessions)
		}
		per := func(a, z uint64) float64 { return (float64(z) - float64(a)) / float64(sessions) }
		b.ReportMetric(per(before.HeapInuseBytes+before.StackInuseBytes, after.HeapInuseBytes+after.StackInuseBytes), "heap+stack-B/session")
		b.ReportMetric(per(before.HeapInuseBytes, after.HeapInuseBytes), "heap-B/session")
		b.ReportMetric(per(before.StackInuseBytes, after.StackInuseBytes), "stack-B/session")
		b.ReportMetric(per(rssBefore, rssAfter), "RSS-B/session")
		b.ReportMetric(float64(after.Goroutines-before.Goroutines)/float64(sessions), "goroutines/session")
		for _, c := range conns {
			c.Close(websocket.StatusNormalClosure, "")
		}
		deadline := time.Now().Add(time.Minute)
		for memstats(b, p).Sessions != 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func memstats(b *testing.B, p *process) adminapi.MemStats {
	b.Helper()
	return p.memStats()
}

// rss reads the server's resident set size from /proc.
func rss(b *testing.B, p *process) uint64 {
	b.Helper()
	data, err := os.ReadFile("/proc/" + strconv.Itoa(p.Pid()) + "/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb << 10
		}
	}
	b.Fatal("no VmRSS")
	return 0
}
