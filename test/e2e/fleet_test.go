//go:build e2e

package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/voicegateway/voicegateway/internal/testkit"
)

// fleetVGW is the VoiceGateway of TestBlockSurvivesRolloutRestart: three
// pods that trust every IPv4 peer as a proxy (the test host reaches them
// from its bridge or its own address), so that the test presents an
// attacker's address in X-Forwarded-For without blocking itself.
const (
	fleetVGW      = "fleet-e2e"
	fleetAttacker = "203.0.113.66"
	fleetManifest = `apiVersion: voicegateway.dev/v1alpha1
kind: VoiceGateway
metadata:
  name: fleet-e2e
spec:
  replicas: 3
  backend:
    type: echo
  rateLimit:
    suspiciousAfter: 5
    blockAfter: 10
    blockDuration: 10m
    trustedProxies: ["0.0.0.0/0"]
  drain:
    preStopDelay: 2s
    timeout: 10s
`
)

type fleetPod struct {
	Metadata struct {
		Name              string     `json:"name"`
		DeletionTimestamp *time.Time `json:"deletionTimestamp"`
	} `json:"metadata"`
	Status struct {
		PodIP      string `json:"podIP"`
		Conditions []struct {
			Type   string `json:"type"`
			Status string `json:"status"`
		} `json:"conditions"`
	} `json:"status"`
}

func (p fleetPod) ready() bool {
	for _, c := range p.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == "True"
		}
	}
	return false
}

func fleetPods(ctx context.Context) ([]fleetPod, error) {
	out, err := kubectl(ctx, "get", "pods", "-l", "app.kubernetes.io/instance="+fleetVGW, "-o", "json")
	if err != nil {
		return nil, err
	}
	var list struct {
		Items []fleetPod `json:"items"`
	}
	err = json.Unmarshal(out, &list)
	return list.Items, err
}

// mintAs asks addr (host:port) for a client token with key, as the
// attacker, and returns the status and the Retry-After header.
func mintAs(ctx context.Context, addr, key string) (int, time.Duration, error) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, "http://"+addr+"/v1/client_tokens", nil)
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("X-Forwarded-For", fleetAttacker)
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		return 0, 0, err
	}
	resp.Body.Close()
	retry, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	return resp.StatusCode, time.Duration(retry) * time.Second, nil
}

// blockedOnEveryPod probes each running pod directly with the valid key
// (a probe never counts as a failure) and returns each pod's Retry-After.
func blockedOnEveryPod(ctx context.Context, apiKey string, want int) (map[string]time.Duration, string) {
	pods, err := fleetPods(ctx)
	if err != nil {
		return nil, err.Error()
	}
	retry := map[string]time.Duration{}
	var state []string
	for _, p := range pods {
		if p.Metadata.DeletionTimestamp != nil || !p.ready() || p.Status.PodIP == "" {
			state = append(state, p.Metadata.Name+" not ready or terminating")
			continue
		}
		code, after, err := mintAs(ctx, net.JoinHostPort(p.Status.PodIP, "8080"), apiKey)
		state = append(state, fmt.Sprintf("%s: HTTP %d %v", p.Metadata.Name, code, err))
		if code == http.StatusTooManyRequests {
			retry[p.Metadata.Name] = after
		}
	}
	if len(retry) != want || len(pods) != want {
		return nil, strings.Join(state, "; ")
	}
	return retry, strings.Join(state, "; ")
}

// TestBlockSurvivesRolloutRestart is issue 16's cluster point: an address
// blocked through the Service is blocked on every pod, and stays blocked on
// every pod after `kubectl rollout restart` replaced them all.
func TestBlockSurvivesRolloutRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	out := env("E2E_OUT", t.TempDir())
	manifest := filepath.Join(t.TempDir(), "fleet-e2e.yaml")
	if err := os.WriteFile(manifest, []byte(fleetManifest), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := kubectl(ctx, "apply", "-f", manifest); err != nil {
		t.Fatal(err)
	}
	defer func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer dcancel()
		if _, err := kubectl(dctx, "delete", "vgw", fleetVGW, "--wait=true", "--timeout=90s"); err != nil {
			t.Errorf("deleting %s: %v", fleetVGW, err)
		}
	}()

	type fleetStatus struct {
		Ready string `json:"ready"`
		Fleet *struct {
			Members   int  `json:"members"`
			Reporting int  `json:"reporting"`
			Agree     bool `json:"agree"`
		} `json:"fleet"`
	}
	getStatus := func() (fleetStatus, error) {
		var v struct {
			Status fleetStatus `json:"status"`
		}
		b, err := kubectl(ctx, "get", "vgw", fleetVGW, "-o", "json")
		if err == nil {
			err = json.Unmarshal(b, &v)
		}
		return v.Status, err
	}
	fleetAgrees := func(what string) {
		t.Helper()
		testkit.Eventually(t, 3*time.Minute, until(what, func() (bool, string) {
			st, err := getStatus()
			ok := err == nil && st.Ready == "3/3" && st.Fleet != nil && st.Fleet.Agree && st.Fleet.Members == 3
			return ok, fmt.Sprintf("%+v %v", st, err)
		}))
		line, _ := kubectl(ctx, "get", "vgw", fleetVGW, "-o", "wide")
		t.Logf("%s:\n%s", what, line)
	}
	fleetAgrees("READY 3/3, the three pods see the same fleet of 3")

	encoded, err := kubectl(ctx, "get", "secret", fleetVGW+"-fleet", "-o", "jsonpath={.data.api-keys}")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := base64.StdEncoding.DecodeString(string(encoded))
	if err != nil {
		t.Fatal(err)
	}
	apiKey := strings.TrimSpace(strings.Split(string(keys), "\n")[0])
	svc, err := kubectl(ctx, "get", "service", fleetVGW, "-o", "jsonpath={.spec.clusterIP}:{.spec.ports[0].port}")
	if err != nil {
		t.Fatal(err)
	}

	// blockAfter failures through the Service: kube-proxy spreads them
	// over the pods, none of which sees ten.
	codes := map[int]int{}
	for i := range 10 {
		code, _, err := mintAs(ctx, string(svc), "vgw-wrong-key-"+strconv.Itoa(i))
		if err != nil {
			t.Fatal(err)
		}
		codes[code]++
	}
	t.Logf("10 failed authentications through the Service %s: %v", svc, codes)
	blockedAt := time.Now()
	// Each pod's convergence, read from its own blocked-address gauge
	// (listed once: nothing restarts them meanwhile) every 10 ms: a probe
	// through the front door would wait out the suspicious delay of an
	// address not yet blocked there, and measure that second instead.
	pods, err := fleetPods(ctx)
	if err != nil {
		t.Fatal(err)
	}
	converged := map[string]time.Duration{}
	for len(converged) < len(pods) && time.Since(blockedAt) < 10*time.Second {
		for _, p := range pods {
			if _, ok := converged[p.Metadata.Name]; ok {
				continue
			}
			if v, err := podMetric(ctx, p.Status.PodIP, "voicegateway_ratelimit_blocked_ips"); err == nil && v >= 1 {
				converged[p.Metadata.Name] = time.Since(blockedAt).Round(time.Millisecond)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	var before map[string]time.Duration
	testkit.Eventually(t, 10*time.Second, until("the address blocked on every pod", func() (bool, string) {
		var state string
		before, state = blockedOnEveryPod(ctx, apiKey, 3)
		return before != nil, state
	}))
	t.Logf("blocked on each pod after the last failure through the Service: %v; Retry-After before the restart: %v", converged, before)
	oldPods := map[string]bool{}
	for name := range before {
		oldPods[name] = true
	}

	restarted := time.Now()
	if _, err := kubectl(ctx, "rollout", "restart", "deployment/"+fleetVGW); err != nil {
		t.Fatal(err)
	}
	if _, err := kubectl(ctx, "rollout", "status", "deployment/"+fleetVGW, "--timeout=5m"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 3*time.Minute, until("only new pods, all ready", func() (bool, string) {
		pods, err := fleetPods(ctx)
		if err != nil {
			return false, err.Error()
		}
		var names []string
		for _, p := range pods {
			names = append(names, p.Metadata.Name)
			if oldPods[p.Metadata.Name] || !p.ready() {
				return false, fmt.Sprint(names)
			}
		}
		return len(pods) == 3, fmt.Sprint(names)
	}))
	t.Logf("kubectl rollout restart replaced the 3 pods in %v", time.Since(restarted).Round(time.Second))

	after, state := blockedOnEveryPod(ctx, apiKey, 3)
	if after == nil {
		t.Fatalf("after the rollout restart the address is not blocked on every pod: %s", state)
	}
	t.Logf("Retry-After after the restart, on the 3 new pods: %v", after)
	elapsed := time.Since(blockedAt)
	for name, left := range after {
		if oldPods[name] {
			t.Errorf("pod %s survived the restart", name)
		}
		// Lengthened by nothing (a block is never extended by failures
		// during it); shortened by no more than the time that passed.
		if left > 10*time.Minute || left < 10*time.Minute-elapsed-5*time.Second {
			t.Errorf("pod %s: %v left after %v, want about %v", name, left, elapsed.Round(time.Second), 10*time.Minute-elapsed)
		}
	}
	fleetAgrees("after the restart, the three new pods see the same fleet of 3")

	report, _ := json.MarshalIndent(map[string]any{
		"retry_after_before_seconds": secondsOf(before), "retry_after_after_seconds": secondsOf(after),
		"restart_seconds": time.Since(restarted).Seconds(),
	}, "", "  ")
	if err := os.WriteFile(filepath.Join(out, "fleet-block-report.json"), report, 0o644); err != nil {
		t.Error(err)
	}
}

func secondsOf(m map[string]time.Duration) []float64 {
	var out []float64
	for _, d := range m {
		out = append(out, d.Seconds())
	}
	slices.Sort(out)
	return out
}
