package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseProcStat(t *testing.T) {
	// A command name with spaces and a ')' of its own: only the last ')'
	// ends it. utime (field 14) is 1234 ticks, stime (field 15) 567.
	const line = "4242 (voice ) server) S 1 4242 4242 0 -1 4194560 1023 0 0 0 1234 567 0 0 20 0 9 0 3537426 1260060672 13871 18446744073709551615 1 1 0 0 0 0 0 0 2143420159 0 0 0 17 1 0 0 0 0 0\n"
	state, cpu, err := parseStat(line)
	if err != nil {
		t.Fatal(err)
	}
	if state != 'S' {
		t.Errorf("state %q, want 'S'", state)
	}
	want := cpuTimes{user: 12340 * time.Millisecond, system: 5670 * time.Millisecond}
	if cpu != want {
		t.Errorf("cpu %+v, want %+v", cpu, want)
	}
	if cpu.total() != 18010*time.Millisecond {
		t.Errorf("total %v, want 18.01s", cpu.total())
	}
}

func TestParseProcStatRejects(t *testing.T) {
	for _, line := range []string{
		"",
		"4242 voice-server S 1 4242", // no command name
		"4242 (voice-server) S 1 4242 4242 0 -1 4194560", // cut short
		"4242 (voice-server) S 1 4242 4242 0 -1 4194560 1023 0 0 0 x 567 0 0",
		"4242 (voice-server) S 1 4242 4242 0 -1 4194560 1023 0 0 0 12 -5 0 0",
	} {
		if _, _, err := parseStat(line); err == nil {
			t.Errorf("parseStat(%q) took it", line)
		}
	}
}

func TestProcStatOfThisProcess(t *testing.T) {
	state, cpu, err := procStat(os.Getpid())
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	// The state is the main thread's: running or asleep, not gone.
	if !strings.ContainsRune("RSD", rune(state)) {
		t.Errorf("state %q, want R, S or D", state)
	}
	if cpu.user < 0 || cpu.system < 0 {
		t.Errorf("cpu %+v", cpu)
	}
}

// The meter's total and kernel part come from one end read: asking again
// later neither moves the interval nor reads /proc again.
func TestCPUMeterOneInterval(t *testing.T) {
	m := startCPU(os.Getpid())
	if m == nil {
		t.Skip("no /proc here")
	}
	burnCPU(m)
	total, system := m.cores(), m.systemCores()
	if total <= 0 || system < 0 || system > total {
		t.Fatalf("cores %v, of which kernel %v", total, system)
	}
	burnCPU(m)
	if again, systemAgain := m.cores(), m.systemCores(); again != total || systemAgain != system {
		t.Errorf("read again: cores %v (was %v), kernel %v (was %v)", again, total, systemAgain, system)
	}
}

// burnCPU reads /proc (user and kernel work) until the process has used
// at least two clock ticks of CPU since m started.
func burnCPU(m *cpuMeter) {
	for range 1_000_000 {
		now, err := procCPU(m.pid)
		if err != nil || now.total()-m.start.total() >= 2*time.Second/clockTicks {
			return
		}
	}
}

func TestCPUMeterUnknown(t *testing.T) {
	var none *cpuMeter
	if c, s := none.cores(), none.systemCores(); c != -1 || s != -1 {
		t.Errorf("no meter: cores %v, kernel %v; want -1, -1", c, s)
	}
	if startCPU(0) != nil {
		t.Error("a meter for pid 0")
	}
	// A process that ended before the end read: unknown, not zero.
	m := &cpuMeter{pid: 1 << 30, wall0: time.Now().Add(-time.Second)}
	if c, s := m.cores(), m.systemCores(); c != -1 || s != -1 {
		t.Errorf("gone process: cores %v, kernel %v; want -1, -1", c, s)
	}
}

func TestCPULine(t *testing.T) {
	for _, c := range []struct {
		server, serverSystem, client, clientSystem float64
		want                                       string
	}{
		{0.221, 0.1, 0.214, 0.09, "server 0.22 cores (0.10 kernel), vgload 0.21 cores (0.09 kernel)"},
		{-1, -1, 0.5, 0.25, "server — cores, vgload 0.50 cores (0.25 kernel)"},
	} {
		if got := cpuLine(c.server, c.serverSystem, c.client, c.clientSystem); got != c.want {
			t.Errorf("cpuLine = %q, want %q", got, c.want)
		}
	}
}
