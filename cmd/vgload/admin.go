package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/voicegateway/voicegateway/internal/boundedfile"
)

// adminClient reads the voice server's admin endpoints. Keep-alives are off:
// an idle connection held by the tool would show up in the very goroutine
// and file counts that the soak compares.
type adminClient struct {
	base string
	// token is the admin token the guarded endpoints (/debug/*) need;
	// empty sends none.
	token string
	http  *http.Client
}

// adminTokenFlag adds --admin-token-file to a subcommand: the server's
// /debug endpoints answer only the admin token's holders.
func adminTokenFlag(fs *flag.FlagSet) *string {
	return fs.String("admin-token-file", os.Getenv("VGLOAD_ADMIN_TOKEN_FILE"),
		"file holding the gateway's admin token (its fleet Secret's admin-token; env VGLOAD_ADMIN_TOKEN_FILE), for /debug/memstats and profiles; run the server with --debug-endpoints")
}

func newAdminClient(addr, tokenFile string, allowRemote bool) (*adminClient, error) {
	if addr == "" {
		return nil, nil
	}
	token := ""
	if tokenFile != "" {
		data, err := boundedfile.Read(tokenFile, 4<<10)
		if err != nil {
			return nil, fmt.Errorf("--admin-token-file: %w", err)
		}
		token = strings.TrimSpace(string(data))
	}
	return &adminClient{
		base:  httpURL(addr),
		token: token,
		http: &http.Client{
			Timeout: 2 * time.Minute, // a CPU profile takes as long as it samples
			Transport: &http.Transport{
				DialContext:       guardedDialer(allowRemote).DialContext,
				DisableKeepAlives: true,
				Proxy:             nil,
			},
		},
	}, nil
}

// MemStats mirrors the server's /debug/memstats document.
type MemStats struct {
	HeapInuseBytes  uint64 `json:"heap_inuse_bytes"`
	HeapAllocBytes  uint64 `json:"heap_alloc_bytes"`
	StackInuseBytes uint64 `json:"stack_inuse_bytes"`
	SysBytes        uint64 `json:"sys_bytes"`
	Goroutines      int    `json:"goroutines"`
	OpenFiles       int    `json:"open_files"`
	Sessions        int    `json:"sessions"`
}

func (a *adminClient) get(ctx context.Context, path string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+path, nil)
	if err != nil {
		return 0, nil, err
	}
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	return resp.StatusCode, body, err
}

// memStats forces a GC in the server and returns its live memory.
func (a *adminClient) memStats(ctx context.Context) (MemStats, error) {
	code, body, err := a.get(ctx, "/debug/memstats")
	if err != nil {
		return MemStats{}, err
	}
	var m MemStats
	if code != http.StatusOK {
		return m, fmt.Errorf("/debug/memstats: HTTP %d %s (run the server with --debug-endpoints and give vgload --admin-token-file)", code, bytes.TrimSpace(body))
	}
	return m, json.Unmarshal(body, &m)
}

// ready reports whether /readyz answers 200.
func (a *adminClient) ready(ctx context.Context) (bool, error) {
	code, _, err := a.get(ctx, "/readyz")
	return code == http.StatusOK, err
}

// metricSum adds up every sample of the named Prometheus metric (all label
// sets). It returns 0 when the metric has no samples yet.
func (a *adminClient) metricSum(ctx context.Context, name string) (float64, error) {
	code, body, err := a.get(ctx, "/metrics")
	if err != nil {
		return 0, err
	}
	if code != http.StatusOK {
		return 0, fmt.Errorf("/metrics: HTTP %d", code)
	}
	return sumMetric(body, name), nil
}

// sumMetric parses the Prometheus text format just enough to add up the
// samples of one metric: lines "name value" or "name{labels} value".
func sumMetric(text []byte, name string) float64 {
	var sum float64
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue // another metric sharing the prefix
		}
		if i := strings.LastIndexByte(rest, '}'); i >= 0 {
			rest = rest[i+1:]
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(fields[0], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// waitSessions polls until the server holds at most want sessions or ctx ends.
func (a *adminClient) waitSessions(ctx context.Context, want int) (MemStats, error) {
	for {
		m, err := a.memStats(ctx)
		if err == nil && m.Sessions <= want {
			return m, nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("server still holds %d sessions", m.Sessions)
			}
			return m, err
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// saveProfile writes the server's pprof profile at path (an admin URL path
// with its query) to file.
func (a *adminClient) saveProfile(ctx context.Context, path, file string) error {
	code, body, err := a.get(ctx, path)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d", path, code)
	}
	return os.WriteFile(file, body, 0o644)
}
