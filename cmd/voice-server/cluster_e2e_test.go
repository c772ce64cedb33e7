package main

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/voicegateway/voicegateway/internal/testkit"
)

// attackerIP is the client address the fleet tests present through
// X-Forwarded-For (the processes trust loopback as their proxy).
const attackerIP = "203.0.113.77"

// fleetMember is one voice-server process of a gossiping fleet.
type fleetMember struct {
	*process
	gossip string
}

// startFleetMember runs a replica gossiping on gossip with peers, on the
// fleet Secret in fleetDir, with a drain short enough for restarts.
func startFleetMember(t *testing.T, fleetDir, gossip string, peers []string) *fleetMember {
	t.Helper()
	p := startProcess(t,
		"--fleet-secret-dir", fleetDir,
		"--cluster-listen", gossip, "--cluster-peers", strings.Join(peers, ","),
		"--cluster-settle-timeout", "5s",
		"--trusted-proxies", "127.0.0.1",
		"--auth-block-after", "10", "--auth-suspicious-after", "5", "--auth-suspicious-delay", "0",
		"--auth-block-duration", "10m",
		"--drain-timeout", "2s", "--propagation-delay", "100ms", "--notify-window", "100ms", "--exit-margin", "3s",
	)
	return &fleetMember{process: p, gossip: gossip}
}

// attempt mints a client token on m as the attacker, with key, and returns
// the status and the Retry-After header.
func (m *fleetMember) attempt(t *testing.T, key string) (int, time.Duration) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+m.public+"/v1/client_tokens", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("X-Forwarded-For", attackerIP)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("mint on %s: %v", m.public, err)
	}
	resp.Body.Close()
	retry, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	return resp.StatusCode, time.Duration(retry) * time.Second
}

// blocked reports whether m refuses the attacker: a probe with the valid key
// gets 429 when blocked (and changes nothing when not: a success only lifts
// suspicion).
func (m *fleetMember) blocked(t *testing.T) (bool, time.Duration) {
	code, retry := m.attempt(t, testAPIKey)
	return code == http.StatusTooManyRequests, retry
}

func (m *fleetMember) ready(t *testing.T) bool {
	code, _ := testkit.HTTPGet(t, "http://"+m.admin+"/readyz")
	return code == http.StatusOK
}

// TestFleetSharesBlocks is issue 16's first point on real processes: three
// replicas gossiping on loopback; blockAfter failures spread over them block
// the attacker on all three within a second; restarting them one by one
// (SIGTERM, a normal drain) keeps the block; a fourth that joins later
// knows it before it reports ready.
func TestFleetSharesBlocks(t *testing.T) {
	fleetDir := newFleetDir(t)
	gossip := []string{testkit.FreeAddr(t), testkit.FreeAddr(t), testkit.FreeAddr(t)}
	members := make([]*fleetMember, 3)
	for i := range members {
		members[i] = startFleetMember(t, fleetDir, gossip[i], gossip)
	}
	testkit.Eventually(t, 15*time.Second, func() error {
		for i, m := range members {
			if st := m.status(); st.Cluster == nil || st.Cluster.Members != 3 || !m.ready(t) {
				return fmt.Errorf("replica %d: %+v", i, st.Cluster)
			}
		}
		return nil
	})
	digest := members[0].status().Cluster.MembersDigest
	for i, m := range members {
		if got := m.status().Cluster.MembersDigest; got != digest {
			t.Errorf("replica %d sees another fleet: digest %s, want %s", i, got, digest)
		}
	}

	// Ten failures, spread: 4, 3 and 3. None of the replicas saw ten.
	const blockAfter = 10
	for i := range blockAfter {
		if code, _ := members[i%3].attempt(t, "vgw-wrong-key-"+strconv.Itoa(i)); code != http.StatusUnauthorized && code != http.StatusTooManyRequests {
			t.Fatalf("failure %d on replica %d: HTTP %d, want 401", i, i%3, code)
		}
	}
	last := time.Now()
	// Each replica probed every 2 ms until it blocks, within a second.
	var convergence [3]time.Duration
	for done := 0; done < len(members); {
		if time.Since(last) > time.Second {
			t.Fatalf("not blocked on every replica within 1 s of the last failure: %v", convergence)
		}
		for i, m := range members {
			if convergence[i] == 0 {
				if b, _ := m.blocked(t); b {
					convergence[i] = time.Since(last)
					done++
				}
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	_, before := members[0].blocked(t)
	t.Logf("convergence: %d failures spread 4/3/3 over 3 replicas blocked the IP on each within %v, %v, %v of the last failure; Retry-After %v",
		blockAfter, convergence[0].Round(time.Millisecond), convergence[1].Round(time.Millisecond), convergence[2].Round(time.Millisecond), before)

	// A rolling restart: each replica drains on SIGTERM and a new process
	// takes its gossip address; the block holds on the new one before it
	// is ready, and on the others throughout.
	for i := range members {
		old := members[i]
		old.Signal(syscall.SIGTERM)
		if code := old.WaitExit(15 * time.Second); code != 0 {
			t.Fatalf("replica %d exited %d after SIGTERM\n%s", i, code, old.Logs())
		}
		if countLogs(old.process, "state handed to the fleet") != 1 {
			t.Errorf("replica %d did not hand its state on:\n%s", i, old.Logs())
		}
		started := time.Now()
		next := startFleetMember(t, fleetDir, gossip[i], gossip)
		testkit.Eventually(t, 10*time.Second, testkit.That("the new replica is ready", func() bool { return next.ready(t) }))
		ready := time.Since(started)
		if b, retry := next.blocked(t); !b {
			t.Fatalf("restart %d: the new replica was ready without the block", i)
		} else {
			t.Logf("restart %d: new replica ready %v after start, blocking with Retry-After %v", i, ready.Round(time.Millisecond), retry)
		}
		members[i] = next
		for j, m := range members {
			if b, _ := m.blocked(t); !b {
				t.Errorf("restart %d: replica %d no longer blocks", i, j)
			}
		}
	}
	_, after := members[0].blocked(t)
	t.Logf("block before the restarts: Retry-After %v; after all three restarted: %v", before, after)
	if after < before-time.Minute {
		t.Errorf("the block lost time in the restarts: %v before, %v after", before, after)
	}

	// A fourth replica, named only the first's address, knows the block
	// before it reports ready.
	started := time.Now()
	fourth := startFleetMember(t, fleetDir, testkit.FreeAddr(t), gossip[:1])
	for !fourth.ready(t) {
		if time.Since(started) > 10*time.Second {
			t.Fatal("the fourth replica did not become ready")
		}
		time.Sleep(5 * time.Millisecond)
	}
	readyAfter := time.Since(started)
	if b, _ := fourth.blocked(t); !b {
		t.Fatal("the fourth replica reported ready without the block")
	}
	t.Logf("fourth replica: ready %v after start, with the block", readyAfter.Round(time.Millisecond))
	testkit.Eventually(t, 5*time.Second, func() error {
		for i, m := range append(members, fourth) {
			if st := m.status(); st.Cluster.Members != 4 {
				return fmt.Errorf("replica %d sees %d members", i, st.Cluster.Members)
			}
		}
		return nil
	})
}
