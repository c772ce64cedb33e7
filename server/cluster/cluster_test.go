package cluster

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"

	"github.com/voicegateway/voicegateway/server/ratelimit"
)

var testKey = bytes.Repeat([]byte{7}, 32)

// freePort returns a loopback port free for both UDP and TCP.
func freePort(t *testing.T) string { return freePortTB(t) }

func freePortTB(t testing.TB) string {
	t.Helper()
	// Below the kernel's ephemeral range (32768–60999 by default): a port
	// from 127.0.0.1:0 is one any process's next outgoing connection may
	// take before the replica binds it, which a busy machine showed ("bind:
	// address already in use" when a replica restarted on its port).
	for range 200 {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(20000+rand.IntN(12000)))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		u, err := net.ListenPacket("udp", addr)
		l.Close()
		if err == nil {
			u.Close()
			return addr
		}
	}
	t.Fatal("no free port for UDP and TCP")
	return ""
}

// replica is a limiter with its Peer running on loopback.
type replica struct {
	limiter *ratelimit.Limiter
	peer    *Peer
	metrics *Metrics
	addr    string
	stop    func()
}

func startReplica(t *testing.T, key []byte, peers []string, addr string) *replica {
	t.Helper()
	return startReplicaWith(t, Config{Listen: addr, Peers: peers, FleetKey: key})
}

func startReplicaWith(t *testing.T, cfg Config) *replica {
	t.Helper()
	return startReplicaCfg(t, cfg, ratelimit.Config{BlockAfter: 10, SuspiciousAfter: 5})
}

func startReplicaCfg(t testing.TB, cfg Config, lcfg ratelimit.Config) *replica {
	t.Helper()
	addr := cfg.Listen
	l, err := ratelimit.New(lcfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := NewMetrics()
	if cfg.SettleTimeout == 0 {
		cfg.SettleTimeout = 2 * time.Second
	}
	cfg.JoinInterval, cfg.HandoffTimeout, cfg.NodeName = 200*time.Millisecond, time.Second, "test"
	p, err := New(cfg, l, m, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	r := &replica{limiter: l, peer: p, metrics: m, addr: addr}
	r.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(r.stop)
	return r
}

// testLogger logs to t until the test ends: memberlist's timer goroutines
// may log once more after Shutdown returns.
func testLogger(t testing.TB) logr.Logger {
	var mu sync.Mutex
	done := false
	t.Cleanup(func() {
		mu.Lock()
		done = true
		mu.Unlock()
	})
	return funcr.New(func(prefix, args string) {
		mu.Lock()
		defer mu.Unlock()
		if !done && (strings.Contains(args, "fleet") || testing.Verbose()) {
			t.Log(prefix, args)
		}
	}, funcr.Options{Verbosity: 0})
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	return waitForTB(t, timeout, what, cond)
}

func waitForTB(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// TestFleetConverges: three replicas on loopback join, failures spread over
// them block the IP on every one, a replica that leaves hands its state on,
// and one that joins later takes the block before it settles.
func TestFleetConverges(t *testing.T) {
	addrs := []string{freePort(t), freePort(t), freePort(t)}
	var rs []*replica
	for _, a := range addrs {
		rs = append(rs, startReplica(t, testKey, addrs, a))
	}
	waitFor(t, 10*time.Second, "three members", func() bool {
		for _, r := range rs {
			if len(r.peer.Members()) != 3 || !r.peer.Settled() {
				return false
			}
		}
		return true
	})
	ip := netip.MustParseAddr("203.0.113.50")
	for i := range 9 {
		rs[i%3].limiter.Failure(ip)
	}
	// Nine failures in the fleet block nobody, however long they gossip:
	// nothing is counted twice.
	time.Sleep(time.Second)
	for i, r := range rs {
		if d := r.limiter.Check(ip); d.Verdict == ratelimit.Block {
			t.Fatalf("replica %d blocks after 9 failures in the fleet: %+v", i, d)
		}
	}
	rs[0].limiter.Failure(ip)
	took := waitFor(t, time.Second, "the block on all three", func() bool {
		for _, r := range rs {
			if r.limiter.Check(ip).Verdict != ratelimit.Block {
				return false
			}
		}
		return true
	})
	t.Logf("10 failures spread over 3 replicas: blocked on all 3 within %v of the last", took)

	// The first leaves; a fourth joins through the second alone.
	rs[0].stop()
	late := startReplica(t, testKey, []string{addrs[1]}, freePort(t))
	waitFor(t, 5*time.Second, "the late replica settles", late.peer.Settled)
	if d := late.limiter.Check(ip); d.Verdict != ratelimit.Block {
		t.Errorf("the late replica settled without the block: %+v", d)
	}
	if late.metrics.statesMerged.Load() == 0 {
		t.Error("the late replica merged no full state")
	}
}

// TestOtherKeyCannotJoin: a replica with another fleet key neither joins
// nor injects state.
func TestOtherKeyCannotJoin(t *testing.T) {
	a := startReplica(t, testKey, nil, freePort(t))
	waitFor(t, 5*time.Second, "settled alone", a.peer.Settled)
	other := bytes.Repeat([]byte{9}, 32)
	b := startReplica(t, other, []string{a.addr}, freePort(t))
	ip := netip.MustParseAddr("198.51.100.9")
	for range 20 {
		b.limiter.Failure(ip)
	}
	waitFor(t, 5*time.Second, "the stranger settles alone", b.peer.Settled)
	time.Sleep(500 * time.Millisecond)
	if n := len(a.peer.Members()); n != 1 {
		t.Errorf("a replica with another key joined: members %v", a.peer.Members())
	}
	if d := a.limiter.Check(ip); d.Verdict != ratelimit.Allow {
		t.Errorf("state from another key was taken: %+v", d)
	}
	if a.metrics.logErrors.Load() == 0 {
		t.Error("the stranger's packets were not counted among memberlist's errors")
	}
}

// TestHostileMessagesDropped: corrupt, oversized and unknown-version
// messages and states are dropped and counted, and change nothing.
func TestHostileMessagesDropped(t *testing.T) {
	l, err := ratelimit.New(ratelimit.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := NewMetrics()
	p, err := New(Config{Listen: "127.0.0.1:1", FleetKey: testKey}, l, m, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	d := &delegate{p: p}
	good := encodeMessage(&ratelimit.Change{IP: netip.MustParseAddr("192.0.2.1"), BlockedUntil: time.Now().Add(time.Minute).UnixNano()})
	for name, tt := range map[string]struct {
		msg    []byte
		reason int
	}{
		"truncated":     {good[:len(good)-1], reasonCorrupt},
		"trailing":      {append(append([]byte{}, good...), 0), reasonCorrupt},
		"version":       {append([]byte{9}, good[1:]...), reasonVersion},
		"oversized":     {make([]byte, MaxMessageBytes+1), reasonOversized},
		"many counters": {append(append([]byte{}, good[:2+recordHeaderBytes-1]...), 200), reasonCorrupt},
	} {
		before := m.dropped[tt.reason].Load()
		d.NotifyMsg(tt.msg)
		if m.dropped[tt.reason].Load() != before+1 {
			t.Errorf("%s: not counted as %s", name, reasonNames[tt.reason])
		}
	}
	d.MergeRemoteState([]byte{1, kindState, 0xff, 0xff, 0xff, 0xff}, false)
	if m.dropped[reasonOversized].Load() != 2 {
		t.Errorf("a state claiming 4G records was not dropped as oversized")
	}
	if st := l.Stats(); st.Tracked != 0 {
		t.Errorf("hostile messages left %d IPs tracked", st.Tracked)
	}
	d.NotifyMsg(good)
	if st := l.Stats(); st.Blocked != 1 {
		t.Errorf("a good message after them was not applied: %+v", st)
	}
}

func TestStateRoundTrip(t *testing.T) {
	var records []ratelimit.Record
	for i := range 100 {
		r := ratelimit.Record{IP: netip.AddrFrom4([4]byte{10, 0, byte(i / 256), byte(i)}), BlockedUntil: int64(i)}
		for j := range i % (maxCounters + 1) {
			r.Counters = append(r.Counters, ratelimit.Counter{Origin: ratelimit.Origin(j + 1), NewestSlot: int64(i * j), Slots: [8]uint16{uint16(j)}})
		}
		records = append(records, r)
	}
	b, n := encodeState(records)
	if n != len(records) {
		t.Fatalf("encoded %d of %d", n, len(records))
	}
	i := 0
	if _, err := decodeState(b, func(r *ratelimit.Record) {
		want := records[i]
		if r.IP != want.IP || r.BlockedUntil != want.BlockedUntil || fmt.Sprint(r.Counters) != fmt.Sprint(want.Counters) && len(want.Counters) > 0 {
			t.Errorf("record %d: got %+v, want %+v", i, r, want)
		}
		i++
	}); err != nil || i != len(records) {
		t.Fatalf("decodeState: %d records, %v", i, err)
	}
}

// FuzzDecode: no input makes the decoders panic or read out of bounds.
func FuzzDecode(f *testing.F) {
	f.Add(encodeMessage(&ratelimit.Change{IP: netip.MustParseAddr("2001:db8::1"), SuspiciousUntil: 5}))
	st, _ := encodeState([]ratelimit.Record{{IP: netip.MustParseAddr("192.0.2.1"), Counters: []ratelimit.Counter{{Origin: 3}}}})
	f.Add(st)
	f.Add([]byte{1, 2, 0, 0, 0, 1})
	l, err := ratelimit.New(ratelimit.Config{MaxTracked: 64}, nil)
	if err != nil {
		f.Fatal(err)
	}
	l.Replicate(1, nil)
	f.Fuzz(func(t *testing.T, b []byte) {
		var r ratelimit.Record
		if decodeMessage(b, &r) == nil {
			l.Merge(&r)
		}
		_, _ = decodeState(b, func(r *ratelimit.Record) { l.Merge(r) })
		if n := l.Stats().Tracked; n > 64 {
			t.Fatalf("merged input grew the table to %d, cap 64", n)
		}
	})
}

// TestPeersFile: a replica finds its peers in a file read again on every
// attempt (the operator's list where Services have no DNS); an empty file
// means it is the first, ready at once.
func TestPeersFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "peers")
	if err := os.WriteFile(file, []byte("# none yet\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// With no peer to wait for it settles at its first attempt, long before
	// its settle timeout (an hour here, so that only that can tell).
	first := startReplicaWith(t, Config{Listen: freePort(t), PeersFile: file, FleetKey: testKey, SettleTimeout: time.Hour})
	waitFor(t, time.Minute, "the first settles alone, not at its settle timeout", first.peer.Settled)
	if err := os.WriteFile(file, []byte("# the pods\n"+first.addr+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	second := startReplicaWith(t, Config{Listen: freePort(t), PeersFile: file, Peers: []string{"no-such-name.invalid:7946"}, FleetKey: testKey})
	waitFor(t, 5*time.Second, "the second joins through the file", func() bool { return len(second.peer.Members()) == 2 })
}

// TestFleetKeyRotation: a changed fleet key becomes the gossip key on each
// replica in its own time, and the fleet keeps sharing blocks through it.
func TestFleetKeyRotation(t *testing.T) {
	var mu sync.Mutex
	keys := [2][]byte{testKey, testKey}
	source := func(i int) func() []byte {
		return func() []byte {
			mu.Lock()
			defer mu.Unlock()
			return keys[i]
		}
	}
	a := startReplicaWith(t, Config{Listen: freePort(t), FleetKey: testKey, FleetKeySource: source(0)})
	b := startReplicaWith(t, Config{Listen: freePort(t), Peers: []string{a.addr}, FleetKey: testKey, FleetKeySource: source(1)})
	waitFor(t, 5*time.Second, "two members", func() bool { return len(a.peer.Members()) == 2 && len(b.peer.Members()) == 2 })
	rotated := bytes.Repeat([]byte{8}, 32)
	for i := range keys {
		mu.Lock()
		keys[i] = rotated
		mu.Unlock()
		time.Sleep(500 * time.Millisecond)
	}
	ip := netip.MustParseAddr("192.0.2.99")
	for range 10 {
		b.limiter.Failure(ip)
	}
	waitFor(t, 2*time.Second, "the block through the rotated key", func() bool { return a.limiter.Check(ip).Verdict == ratelimit.Block })
	if n := len(a.peer.Members()); n != 2 {
		t.Errorf("members after the rotation: %d", n)
	}
}

// TestPartitionHeals: two sides that each kept limiting on their own (two
// replicas each, a block on one side) merge when their sources name each
// other again, and the block holds on all four.
func TestPartitionHeals(t *testing.T) {
	fileA, fileB := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	addrs := []string{freePort(t), freePort(t), freePort(t), freePort(t)}
	write := func(file string, list ...string) {
		if err := os.WriteFile(file, []byte(strings.Join(list, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(fileA, addrs[:2]...)
	write(fileB, addrs[2:]...)
	var rs []*replica
	for i, a := range addrs {
		file := fileA
		if i >= 2 {
			file = fileB
		}
		rs = append(rs, startReplicaWith(t, Config{Listen: a, PeersFile: file, FleetKey: testKey}))
	}
	waitFor(t, 5*time.Second, "two sides of two", func() bool {
		for _, r := range rs {
			if len(r.peer.Members()) != 2 {
				return false
			}
		}
		return true
	})
	ip := netip.MustParseAddr("198.51.100.200")
	for range 10 {
		rs[0].limiter.Failure(ip)
	}
	waitFor(t, time.Second, "the block on side A", func() bool { return rs[1].limiter.Check(ip).Verdict == ratelimit.Block })
	if rs[2].limiter.Check(ip).Verdict == ratelimit.Block {
		t.Fatal("the block crossed the partition")
	}
	write(fileB, addrs...)
	took := waitFor(t, 10*time.Second, "one fleet of four with the block", func() bool {
		for _, r := range rs {
			if len(r.peer.Members()) != 4 || r.limiter.Check(ip).Verdict != ratelimit.Block {
				return false
			}
		}
		return true
	})
	t.Logf("the sides merged %v after their sources named each other", took)
}
