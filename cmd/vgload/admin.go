package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/voicegateway/voicegateway/internal/boundedfile"
	"github.com/voicegateway/voicegateway/server/admin/adminapi"
)

// adminClient reads the voice server's admin endpoints through the
// contract's client (server/admin/adminapi). Keep-alives are off: an idle
// connection held by the tool would show up in the very goroutine and file
// counts that the soak compares.
type adminClient struct {
	api *adminapi.Client
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
	api, err := adminapi.NewClient(addr, adminapi.ClientOptions{
		Token: token,
		HTTPClient: &http.Client{
			Timeout: 2 * time.Minute, // a CPU profile takes as long as it samples
			Transport: &http.Transport{
				DialContext:       guardedDialer(allowRemote).DialContext,
				DisableKeepAlives: true,
				Proxy:             nil,
			},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("--admin: %w", err)
	}
	return &adminClient{api: api}, nil
}

// MemStats is the server's /debug/memstats document, as the reports carry it.
type MemStats = adminapi.MemStats

// memStats forces a GC in the server and returns its live memory.
func (a *adminClient) memStats(ctx context.Context) (MemStats, error) {
	m, err := a.api.MemStats(ctx)
	var refused *adminapi.StatusError
	if errors.As(err, &refused) {
		return m, fmt.Errorf("%w (run the server with --debug-endpoints and give vgload --admin-token-file)", err)
	}
	return m, err
}

// ready reports whether /readyz answers 200.
func (a *adminClient) ready(ctx context.Context) (bool, error) {
	return a.api.Ready(ctx)
}

// metricSum adds up every sample of the named Prometheus metric (all label
// sets). It returns 0 when the metric has no samples yet.
func (a *adminClient) metricSum(ctx context.Context, name string) (float64, error) {
	text, err := a.api.Metrics(ctx)
	if err != nil {
		return 0, err
	}
	return sumMetric(text, name), nil
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
// under /debug/pprof/ with its query, e.g. "/debug/pprof/heap?gc=1") to
// file.
func (a *adminClient) saveProfile(ctx context.Context, path, file string) error {
	u, err := url.Parse(path)
	if err != nil {
		return err
	}
	name, ok := strings.CutPrefix(u.Path, adminapi.PathPprof)
	if !ok {
		return fmt.Errorf("%s is not a profile under %s", path, adminapi.PathPprof)
	}
	profile, err := a.api.Profile(ctx, name, u.Query())
	if err != nil {
		return err
	}
	return os.WriteFile(file, profile, 0o644)
}
