package memory

import (
	"math"
	"runtime/debug"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/voicegateway/voicegateway/server/metrics"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestPromisesAreAdmittedUpToTheirShare(t *testing.T) {
	m := metrics.New()
	b := NewBudget(10*Promised, m)
	var accounts []*Account
	for {
		a, ok := b.Open()
		if !ok {
			break
		}
		accounts = append(accounts, a)
	}
	// 87.5 % of ten promises: eight sessions.
	if len(accounts) != 8 || b.MaxSessions() != 8 {
		t.Fatalf("admitted %d sessions (MaxSessions %d), want 8", len(accounts), b.MaxSessions())
	}
	if got := b.Reserved(); got != 8*Promised {
		t.Fatalf("reserved %d, want %d", got, 8*Promised)
	}
	if got := testutil.ToFloat64(m.Admission.MemoryRefusals.WithLabelValues("session")); got != 1 {
		t.Fatalf("session refusals = %v, want 1", got)
	}
	accounts[0].Close()
	if _, ok := b.Open(); !ok {
		t.Fatal("a closed session's promise is not given back")
	}
}

func TestReserveWithinThePromiseAlwaysSucceeds(t *testing.T) {
	m := metrics.New()
	b := NewBudget(8*Promised, m)
	// One session takes every byte of room beyond the promises.
	hog, ok1 := b.Open()
	honest, ok2 := b.Open()
	if !ok1 || !ok2 {
		t.Fatal("two sessions not admitted")
	}
	taken := fill(hog)
	if taken < 4*Promised {
		t.Fatalf("the hog got %d bytes, less than the room there was", taken)
	}
	// The other session still gets everything it was promised.
	if !honest.Reserve(Audio, GuaranteedBytes/2) || !honest.Reserve(Outbound, GuaranteedBytes/2) {
		t.Fatal("a session's promise refused while another hoards")
	}
	if honest.Reserve(Audio, 1) {
		t.Fatal("a byte of audio past the honest session's promise granted from a spent budget")
	}
	// With the budget spent, output for a client that reads still gets
	// OutputGrace beyond it, counted apart (Over), and no more: the rest
	// of the budget stays kept for new sessions' promises.
	// (The client read its output; audio fills the promise instead.)
	honest.Release(Outbound, GuaranteedBytes/2)
	if !honest.Reserve(Audio, GuaranteedBytes/2) {
		t.Fatal("a session's promise refused while another hoards")
	}
	reservedBefore := b.Reserved()
	out := int64(0)
	for honest.ReserveOutput(4 << 10) {
		out += 4 << 10
	}
	if out != OutputGrace || b.Over() != out || b.Reserved() != reservedBefore+out {
		t.Fatalf("output past a spent budget took %d bytes (over %d, reserved %d from %d), want %d",
			out, b.Over(), b.Reserved(), reservedBefore, OutputGrace)
	}
	if got := testutil.ToFloat64(m.Admission.MemoryRefusals.WithLabelValues("buffer")); got != 2 {
		t.Fatalf("buffer refusals = %v, want 2", got)
	}
	if got := testutil.ToFloat64(m.Admission.MemoryRefusals.WithLabelValues("outbound")); got != 1 {
		t.Fatalf("outbound refusals = %v, want 1", got)
	}
	// What passed the budget keeps no new session out: only promises do.
	if _, ok := b.Open(); !ok {
		t.Fatal("output let through past the budget kept a new session out")
	}
	// Giving back what the hog held beyond its promise makes room again.
	honest.Release(Outbound, out)
	if b.Over() != 0 {
		t.Fatalf("over %d after the output was given back, want 0", b.Over())
	}
	hog.Release(Audio, taken)
	if !honest.Reserve(Audio, 1) {
		t.Fatal("released room not granted")
	}
}

// fill reserves all a can get, 4 KiB at a time, and returns how much.
func fill(a *Account) int64 {
	var n int64
	for a.Reserve(Audio, 4<<10) {
		n += 4 << 10
	}
	return n
}

// TestHoardersCannotKeepNewSessionsOut: whatever sessions hold beyond
// their promises stays within AdmitShare of the budget, so the rest of it
// (an eighth: 73 sessions with a 256 MiB limit) is always there for new
// sessions' promises, whatever is hoarded; and the budget's total never
// passes its limit.
func TestHoardersCannotKeepNewSessionsOut(t *testing.T) {
	b := NewBudget(64*Promised, metrics.New())
	var hoarders []*Account
	for range 4 {
		a, _ := b.Open()
		fill(a)
		hoarders = append(hoarders, a)
	}
	admitted := 0
	for {
		a, ok := b.Open()
		if !ok {
			break
		}
		if !a.Reserve(Audio, GuaranteedBytes) {
			t.Fatal("a new session's promise refused")
		}
		admitted++
		if b.Reserved() > b.Limit() {
			t.Fatalf("reserved %d over the budget %d", b.Reserved(), b.Limit())
		}
	}
	// The first hoarder took all it could before the others came: every
	// session after it, the other three hoarders included, found its
	// promise in the eighth kept for promises.
	if want := int((b.Limit() - b.admitLimit) / Promised); admitted+len(hoarders)-1 < want {
		t.Fatalf("%d sessions admitted after the hoard, want at least %d", admitted+len(hoarders)-1, want)
	}
	// Once the hoarders let go, the promises may take the rest.
	for _, a := range hoarders {
		a.Close()
	}
	hoarders = nil
	for {
		if _, ok := b.Open(); !ok {
			break
		}
		admitted++
	}
	if admitted+len(hoarders) != b.MaxSessions() {
		t.Fatalf("%d sessions admitted in all, want %d", admitted+len(hoarders), b.MaxSessions())
	}
}

func TestCloseGivesEverythingBack(t *testing.T) {
	m := metrics.New()
	b := NewBudget(100*Promised, m)
	a, _ := b.Open()
	a.Reserve(Audio, 3*Promised)
	a.Reserve(Outbound, 1000)
	a.Force(Outbound, 10)
	a.Reserve(Upstream, 20)
	if got := testutil.ToFloat64(m.Admission.MemoryAccounted.WithLabelValues("audio")); got != 3*Promised {
		t.Fatalf("audio accounted = %v", got)
	}
	a.Close()
	a.Close()
	a.Release(Audio, 5) // a late release after the end changes nothing
	if a.Reserve(Audio, 1) {
		t.Fatal("a closed account granted a reservation")
	}
	if b.Reserved() != 0 || testutil.ToFloat64(m.Admission.MemoryReserved) != 0 {
		t.Fatalf("reserved %d (gauge %v) after close, want 0", b.Reserved(), testutil.ToFloat64(m.Admission.MemoryReserved))
	}
	for _, kind := range metrics.MemoryKinds {
		if got := testutil.ToFloat64(m.Admission.MemoryAccounted.WithLabelValues(kind)); got != 0 {
			t.Errorf("%s accounted = %v after close, want 0", kind, got)
		}
	}
}

func TestNoBudgetRefusesNothing(t *testing.T) {
	b := NewBudget(0, metrics.New())
	a, ok := b.Open()
	if !ok || !a.Reserve(Audio, 1<<40) || b.MaxSessions() < 1<<30 {
		t.Fatal("a process without a budget refused something")
	}
	a.Close()
	var nilAccount *Account
	if !nilAccount.Reserve(Audio, 1) || nilAccount.Held(Audio) != 0 {
		t.Fatal("a nil account refused or counted")
	}
	nilAccount.Release(Audio, 1)
	nilAccount.Close()
}

// TestConcurrentAccountsNeverPassTheBudget: sessions reserving and
// releasing at once never count more than the budget, and end at zero.
func TestConcurrentAccountsNeverPassTheBudget(t *testing.T) {
	m := metrics.New()
	b := NewBudget(64*Promised, m)
	var wg sync.WaitGroup
	var mu sync.Mutex
	peak := int64(0)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, ok := b.Open()
			if !ok {
				return
			}
			defer a.Close()
			for i := range 2000 {
				n := int64(1+i%7) * 4 << 10
				if a.Reserve(Audio, n) {
					mu.Lock()
					peak = max(peak, b.Reserved())
					mu.Unlock()
					if i%3 != 0 {
						a.Release(Audio, n)
					}
				}
			}
		}()
	}
	wg.Wait()
	if peak > b.Limit() {
		t.Fatalf("reserved reached %d, over the budget %d", peak, b.Limit())
	}
	if b.Reserved() != 0 {
		t.Fatalf("reserved %d after every session ended", b.Reserved())
	}
}

func TestBudgetFor(t *testing.T) {
	if got := BudgetFor(512 << 20); got != 256<<20 {
		t.Fatalf("BudgetFor(512Mi) = %d", got)
	}
	if BudgetFor(0) != 0 {
		t.Fatal("no limit must mean no budget")
	}
}

// TestProcessLimit: --memory-limit is the limit and, without GOMEMLIMIT,
// sets the Go runtime's soft limit to 90 % of it; GOMEMLIMIT alone is the
// limit; neither means none.
func TestProcessLimit(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(prev)

	debug.SetMemoryLimit(math.MaxInt64)
	if limit, from := ProcessLimit(512<<20, false); limit != 512<<20 || from != "--memory-limit" {
		t.Fatalf("--memory-limit 512Mi: %d from %q", limit, from)
	}
	if soft := debug.SetMemoryLimit(-1); soft != 512<<20/10*9+(512<<20)%10*9/10 {
		t.Fatalf("soft limit %d after --memory-limit 512Mi, want 90 %%", soft)
	}

	debug.SetMemoryLimit(256 << 20) // as GOMEMLIMIT=256MiB sets it at start
	if limit, from := ProcessLimit(512<<20, true); limit != 512<<20 || from != "--memory-limit" || debug.SetMemoryLimit(-1) != 256<<20 {
		t.Fatalf("--memory-limit with GOMEMLIMIT set: %d from %q, soft limit %d; want GOMEMLIMIT's soft limit kept", limit, from, debug.SetMemoryLimit(-1))
	}
	if limit, from := ProcessLimit(0, true); limit != 256<<20 || from != "GOMEMLIMIT" {
		t.Fatalf("GOMEMLIMIT alone: %d from %q", limit, from)
	}

	debug.SetMemoryLimit(math.MaxInt64)
	if limit, from := ProcessLimit(0, false); limit != 0 || from != "" {
		t.Fatalf("no limit: %d from %q", limit, from)
	}
}
