package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The flood fails authentication from many distinct client addresses, as a
// credential-stuffing botnet would, and measures what that does to the auth
// rate limiter (entries tracked, memory) and to a legitimate client's
// requests meanwhile. The addresses travel in X-Forwarded-For, so the server
// must trust the loopback peer as a proxy (--trusted-proxies 127.0.0.1); they
// come from the documentation and benchmarking ranges (198.18.0.0/15,
// 2001:db8::/32) and are only header values: every connection goes to
// loopback.

// FloodReport is vgload flood's JSON output.
type FloodReport struct {
	Machine         Machine        `json:"machine"`
	Addresses       int64          `json:"addresses_failed"`
	Requests        int64          `json:"requests"`
	Statuses        map[string]int `json:"statuses"`
	DurationS       float64        `json:"duration_seconds"`
	RequestsPerSec  float64        `json:"requests_per_second"`
	Finished        bool           `json:"finished"` // all addresses sent before --max-time
	TrackedIPs      float64        `json:"tracked_ips"`
	BlockedIPs      float64        `json:"blocked_ips"`
	Evictions       float64        `json:"evictions"`
	Before          MemStats       `json:"before"`
	After           MemStats       `json:"after"`
	LegitQuiet      Summary        `json:"legit_quiet"`
	LegitFlood      Summary        `json:"legit_during_flood"`
	LegitStatuses   map[string]int `json:"legit_statuses"`
	ServerCPU       float64        `json:"server_cpu_cores"`
	ClientCPU       float64        `json:"client_cpu_cores"`
	ServerCPUSystem float64        `json:"server_cpu_system_cores"` // the kernel's part of server_cpu_cores
	ClientCPUSystem float64        `json:"client_cpu_system_cores"`
	FloodConcurrent int            `json:"concurrency"`
}

func cmdFlood(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("flood", stderr)
	var target targetFlags
	target.register(fs, "http://127.0.0.1:8080", "the gateway's public HTTP address", "a valid API key, for the legitimate client", false)
	var server serverFlags
	server.register(fs, "127.0.0.1:9090", "its rate limiter's state and memory are read from it", true)
	var report reportFlags
	report.register(fs, "flood")
	ips := fs.Int64("ips", 1_000_000, "distinct client addresses that each fail once")
	concurrency := fs.Int("concurrency", 32, "requests in flight (keep-alive connections)")
	maxTime := fs.Duration("max-time", 5*time.Minute, "stop the flood after this long even if not every address was sent")
	probeEvery := fs.Duration("probe-every", 10*time.Millisecond, "interval of the legitimate client's requests")
	if err := fs.Parse(args); err != nil {
		return err
	}
	for i, u := range target.urls {
		target.urls[i] = httpURL(u)
	}
	targets, err := target.targets(server.adminURL())
	if err != nil {
		return err
	}
	if target.apiKey == "" {
		return fmt.Errorf("flood needs --api-key: the server must authenticate for failures to count")
	}
	if err := checkReachable(ctx, target.allowRemote, targets[0]); err != nil {
		return err
	}
	adm, err := server.client(target.allowRemote)
	if err != nil {
		return err
	}
	r := &FloodReport{Machine: describeMachine(), FloodConcurrent: *concurrency}
	if r.Before, err = adm.memStats(ctx); err != nil {
		return fmt.Errorf("server admin: %w", err)
	}
	endpoint := targets[0] + "/v1/client_tokens"
	transport := func(conns int) *http.Client {
		return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			DialContext: guardedDialer(target.allowRemote).DialContext, MaxIdleConns: conns, MaxIdleConnsPerHost: conns, Proxy: nil,
		}}
	}
	legit := transport(1)
	legitHist := newLatency()
	var legitStatuses counter
	probe := func(ctx context.Context, h *latency) {
		t := time.NewTicker(*probeEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			start := time.Now()
			code := post(ctx, legit, endpoint, "Bearer "+target.apiKey, "192.0.2.10")
			if ctx.Err() != nil {
				return
			}
			h.record(0, time.Since(start))
			legitStatuses.add(code, 1)
		}
	}
	// The legitimate client alone first, for comparison.
	quietCtx, cancelQuiet := context.WithTimeout(ctx, 2*time.Second)
	probe(quietCtx, legitHist)
	cancelQuiet()
	r.LegitQuiet = summarize(legitHist.merged())

	floodCtx, cancelFlood := context.WithTimeout(ctx, *maxTime)
	defer cancelFlood()
	floodHist := newLatency()
	probeDone := make(chan struct{})
	probeCtx, cancelProbe := context.WithCancel(ctx)
	go func() { defer close(probeDone); probe(probeCtx, floodHist) }()

	client := transport(*concurrency)
	var next, sent atomic.Int64
	var statuses counter
	var wg sync.WaitGroup
	serverCPU, clientCPU := startCPU(server.pid), startCPU(os.Getpid())
	start := time.Now()
	for range *concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := map[string]int{}
			defer func() {
				for k, v := range local {
					statuses.add(k, v)
				}
			}()
			for floodCtx.Err() == nil {
				i := next.Add(1) - 1
				if i >= *ips {
					return
				}
				code := post(floodCtx, client, endpoint, "Bearer vgload-flood-not-a-valid-key", docAddr(uint64(i)).String())
				if floodCtx.Err() != nil {
					return
				}
				local[code]++
				sent.Add(1)
			}
		}()
	}
	wg.Wait()
	r.DurationS = time.Since(start).Seconds()
	r.ServerCPU, r.ServerCPUSystem = serverCPU.cores(), serverCPU.systemCores()
	r.ClientCPU, r.ClientCPUSystem = clientCPU.cores(), clientCPU.systemCores()
	cancelProbe()
	<-probeDone
	client.CloseIdleConnections()
	legit.CloseIdleConnections()
	if ctx.Err() != nil {
		return ctx.Err()
	}

	r.Requests = sent.Load()
	r.Addresses = r.Requests
	r.Finished = r.Requests >= *ips
	r.RequestsPerSec = float64(r.Requests) / r.DurationS
	r.Statuses = statuses.snapshot()
	r.LegitFlood = summarize(floodHist.merged())
	r.LegitStatuses = legitStatuses.snapshot()
	r.TrackedIPs, _ = adm.metricSum(ctx, "voicegateway_ratelimit_tracked_ips")
	r.BlockedIPs, _ = adm.metricSum(ctx, "voicegateway_ratelimit_blocked_ips")
	r.Evictions, _ = adm.metricSum(ctx, "voicegateway_ratelimit_evictions_total")
	if r.After, err = adm.memStats(ctx); err != nil {
		return fmt.Errorf("server admin: %w", err)
	}
	if err := writeJSON(report.json, stdout, r); err != nil {
		return err
	}
	writeFloodSummary(stdout, r)
	return appendFile(report.markdown, floodRow(r))
}

// post sends one token request and returns its status ("401"), or "error".
func post(ctx context.Context, c *http.Client, endpoint, authorization, forwardedFor string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, http.NoBody)
	if err != nil {
		return "error"
	}
	req.Header.Set("Authorization", authorization)
	req.Header.Set("X-Forwarded-For", forwardedFor)
	resp, err := c.Do(req)
	if err != nil {
		return "error"
	}
	// Drained so the connection is reused.
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return strconv.Itoa(resp.StatusCode)
}

func writeFloodSummary(w io.Writer, r *FloodReport) {
	fmt.Fprintf(w, "flood: %s addresses failed authentication once each in %.1f s (%.0f req/s, %d in flight) — %d cores (%s), %s, load %s\n",
		thousands(r.Addresses), r.DurationS, r.RequestsPerSec, r.FloodConcurrent, r.Machine.Cores, r.Machine.CPU, r.Machine.Date, r.Machine.LoadAvg)
	if !r.Finished {
		fmt.Fprintln(w, "  (stopped at --max-time before every address was sent)")
	}
	fmt.Fprintf(w, "  responses     %s\n", countMap(r.Statuses))
	fmt.Fprintf(w, "  limiter       %s tracked, %s blocked, %s evictions\n", thousands(int64(r.TrackedIPs)), thousands(int64(r.BlockedIPs)), thousands(int64(r.Evictions)))
	fmt.Fprintf(w, "  server heap   %.1f MB → %.1f MB in use (after GC); %d → %d goroutines\n",
		float64(r.Before.HeapInuseBytes)/1e6, float64(r.After.HeapInuseBytes)/1e6, r.Before.Goroutines, r.After.Goroutines)
	fmt.Fprintf(w, "  legit client  quiet p50 %s p99 %s ms; during the flood p50 %s p99 %s p99.9 %s max %s ms; %s\n",
		msf(r.LegitQuiet.P50), msf(r.LegitQuiet.P99), msf(r.LegitFlood.P50), msf(r.LegitFlood.P99), msf(r.LegitFlood.P999), msf(r.LegitFlood.Max), countMap(r.LegitStatuses))
	fmt.Fprintf(w, "  cpu           %s\n", cpuLine(r.ServerCPU, r.ServerCPUSystem, r.ClientCPU, r.ClientCPUSystem))
}

func floodRow(r *FloodReport) string {
	return fmt.Sprintf("| %s | %.0f s | %s | %s | %s | %.1f → %.1f MB | %s / %s | %s / %s / %s | %s |\n",
		thousands(r.Addresses), r.DurationS, thousands(int64(r.RequestsPerSec)), thousands(int64(r.TrackedIPs)), thousands(int64(r.Evictions)),
		float64(r.Before.HeapInuseBytes)/1e6, float64(r.After.HeapInuseBytes)/1e6,
		msf(r.LegitQuiet.P50), msf(r.LegitQuiet.P99), msf(r.LegitFlood.P50), msf(r.LegitFlood.P99), msf(r.LegitFlood.Max),
		countMap(r.LegitStatuses))
}
