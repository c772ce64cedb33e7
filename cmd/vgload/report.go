package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/voicegateway/voicegateway/internal/voiceclient"
)

// Machine says where figures were taken; every report row carries it.
type Machine struct {
	Cores   int    `json:"cores"`
	CPU     string `json:"cpu"`
	Go      string `json:"go"`
	Date    string `json:"date"`
	LoadAvg string `json:"load_avg"` // 1, 5 and 15 minute load at the start
}

func describeMachine() Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version(), Date: time.Now().UTC().Format(time.DateOnly), CPU: "unknown"}
	// The machine's cores, not this process's: vgload is usually pinned to
	// one of them, and runtime.NumCPU counts only those it may use.
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		processors := 0
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			switch k = strings.TrimSpace(k); {
			case !ok:
			case k == "processor":
				processors++
			case k == "model name" && m.CPU == "unknown":
				m.CPU = strings.TrimSpace(v)
			}
		}
		f.Close()
		if processors > 0 {
			m.Cores = processors
		}
	}
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(data)); len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	return m
}

// thousands formats n with comma separators: 10000 → "10,000".
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// kb formats bytes as kilobytes (1,000 bytes, as the docs' tables do).
func kb(b float64) string { return fmt.Sprintf("%.1f KB", b/1000) }

func msf(v float64) string {
	switch {
	case v < 0:
		return "—"
	case v < 10:
		return fmt.Sprintf("%.2f", v)
	case v < 100:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

// pcts formats a distribution's percentiles "p50 / p99 / p99.9 / max" in ms.
func pcts(s Summary) string {
	if s.Count == 0 {
		return "—"
	}
	return fmt.Sprintf("%s / %s / %s / %s", msf(s.P50), msf(s.P99), msf(s.P999), msf(s.Max))
}

func cores(c float64) string {
	if c < 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f", c)
}

// cpuLine is the summary's CPU of the server and of vgload, each with its
// kernel part: "server 0.22 cores (0.10 kernel), vgload 0.21 cores (0.09
// kernel)".
func cpuLine(server, serverSystem, client, clientSystem float64) string {
	withKernel := func(total, system float64) string {
		s := cores(total) + " cores"
		if total >= 0 && system >= 0 {
			s += " (" + cores(system) + " kernel)"
		}
		return s
	}
	return "server " + withKernel(server, serverSystem) + ", vgload " + withKernel(client, clientSystem)
}

func countMap(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	parts := make([]string, 0, len(m))
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%d × %s", m[k], k))
	}
	return strings.Join(parts, ", ")
}

// markdownRow is the report's row in the matching table of docs/benchmarks.md.
func markdownRow(r *Report, label string) string {
	g := r.Gateway
	if g == nil {
		return ""
	}
	switch r.Mode {
	case "idle":
		m := g.Memory
		if m == nil {
			return ""
		}
		return fmt.Sprintf("| %s | %s | %s | %s | %s | %s | %.2f |\n", label, thousands(m.Sessions),
			kb(m.RSSPerSession), kb(m.HeapStackPerSession), kb(m.HeapPerSession), kb(m.StackPerSession), m.GoroutinesPerSession)
	case "drain":
		d := g.Drain
		if d == nil {
			return ""
		}
		return fmt.Sprintf("| %s | %s ms | %s ms | %d of %d | %d | %s | %s ms | %+.1f ms | %s ms | %s | %s |\n",
			thousands(d.SessionsAtSignal), msf(d.ReadinessFailedMS), msf(d.AllNotifiedMS), d.Notified, d.SessionsAtSignal,
			d.Abnormal, countMap(d.ClosesOnDrained), msf(d.LastSessionEndedMS), d.ExitAfterLastSessionMS, msf(d.ExitMS),
			pcts(g.ReconnectGap), thousands(g.Frames.Lost))
	}
	perCore := "—"
	if g.ServerCPU > 0 {
		perCore = thousands(int64(float64(g.Sessions) / g.ServerCPU))
	}
	dropped := "—"
	if g.ServerDropped >= 0 {
		dropped = thousands(int64(g.ServerDropped))
	}
	base, added := "—", "—"
	if b := r.Baseline; b != nil {
		base = fmt.Sprintf("%s / %s", msf(b.RTT.P50), msf(b.RTT.P99))
	}
	if a := r.Added; a != nil {
		added = fmt.Sprintf("%+.2f / %+.2f", a.P50, a.P99)
	}
	return fmt.Sprintf("| %s | %s | %s | %s | %s | %s / %s | %s | %s | %s | %s | %s | %s |\n",
		label, r.Settings.Audio, cores(g.ServerCPU), perCore, thousands(g.Frames.Sent),
		thousands(g.Frames.Lost), thousands(g.Frames.Late), dropped,
		pcts(g.RTT), base, added, cores(g.ClientCPU), sendLag(g.SendLag))
}

// writeSummary prints the report for a person.
func writeSummary(w io.Writer, r *Report) {
	talk := fmt.Sprintf("%s audio at %d Hz", r.Settings.Audio, r.Settings.SampleRate)
	if r.Settings.Idle {
		talk = "held idle"
	}
	fmt.Fprintf(w, "vgload %s: %d sessions, %s, ramp %.0fs, steady %.0fs — %d cores (%s), %s, load %s\n",
		r.Mode, r.Settings.Sessions, talk, r.Settings.RampS, r.Settings.DurationS,
		r.Machine.Cores, r.Machine.CPU, r.Machine.Date, r.Machine.LoadAvg)
	for _, p := range []*PhaseResult{r.Baseline, r.Gateway} {
		if p != nil {
			writePhase(w, p)
		}
	}
	if a := r.Added; a != nil {
		fmt.Fprintf(w, "added by the gateway (gateway − baseline round trip): p50 %s ms, p90 %s ms, p99 %s ms, p99.9 %s ms\n",
			signed(a.P50), signed(a.P90), signed(a.P99), signed(a.P999))
	}
}

func signed(v float64) string { return fmt.Sprintf("%+.3f", v) }

func writePhase(w io.Writer, p *PhaseResult) {
	fmt.Fprintf(w, "\n[%s] %s\n", p.Name, strings.Join(p.Targets, " → "))
	fmt.Fprintf(w, "  sessions      %d (peak %d connected), %d connections ready, %d reconnects\n", p.Sessions, p.PeakConnected, p.SessionsReady, p.Reconnects)
	if p.Resumed+p.ResumeRefused > 0 {
		fmt.Fprintf(w, "  resumed       %d of %d reconnects with a handle (%d fresh)\n", p.Resumed, p.Resumed+p.ResumeRefused, p.ResumeRefused)
	}
	line := func(name string, s Summary) {
		if s.Count == 0 {
			return
		}
		fmt.Fprintf(w, "  %-13s p50 %s  p90 %s  p99 %s  p99.9 %s  max %s ms  (n=%d)\n", name,
			msf(s.P50), msf(s.P90), msf(s.P99), msf(s.P999), msf(s.Max), s.Count)
	}
	line("connect", p.Connect)
	line("ready", p.Ready)
	line("round trip", p.RTT)
	line("send lag", p.SendLag)
	line("reconnect gap", p.ReconnectGap)
	f := p.Frames
	if f.Sent > 0 {
		fmt.Fprintf(w, "  frames        %d sent, %d echoed, %d lost, %d late (> %d ms), %d reordered, %d duplicate, %d unframed; %.1f frames/s per session\n",
			f.Sent, f.Received, f.Lost, f.Late, f.LateAfterM, f.Reordered, f.Duplicate, f.Unframed, p.FramesPerSecPS)
	}
	if p.ClientStalls > 0 {
		fmt.Fprintf(w, "  client stalls %d (a sender over a second behind skipped ahead: vgload was starved of CPU)\n", p.ClientStalls)
	}
	if p.ServerDropped >= 0 {
		fmt.Fprintf(w, "  server        %.0f frames dropped (voicegateway_dropped_frames_total)\n", p.ServerDropped)
	}
	fmt.Fprintf(w, "  cpu           %s\n", cpuLine(p.ServerCPU, p.ServerCPUSystem, p.ClientCPU, p.ClientCPUSystem))
	fmt.Fprintf(w, "  closes        %s\n", countMap(p.Closes))
	if len(p.Errors) > 0 {
		fmt.Fprintf(w, "  error events  %s\n", countMap(p.Errors))
	}
	if len(p.DialFailures) > 0 {
		fmt.Fprintf(w, "  dial refused  %s\n", countMap(p.DialFailures))
	}
	if m := p.Memory; m != nil {
		fmt.Fprintf(w, "  idle memory   %d sessions: RSS %s, heap+stacks %s (heap %s, stacks %s) per session, %.2f goroutines per session\n",
			m.Sessions, kb(m.RSSPerSession), kb(m.HeapStackPerSession), kb(m.HeapPerSession), kb(m.StackPerSession), m.GoroutinesPerSession)
	}
	if d := p.Drain; d != nil {
		fmt.Fprintf(w, "  drain         SIGTERM with %d sessions: readiness failed after %s ms; %d notified, the last after %s ms;\n",
			d.SessionsAtSignal, msf(d.ReadinessFailedMS), d.Notified, msf(d.AllNotifiedMS))
		fmt.Fprintf(w, "                last session ended after %s ms; exit after %s ms (%+.1f ms after the last session); %d closed abnormally\n",
			msf(d.LastSessionEndedMS), msf(d.ExitMS), d.ExitAfterLastSessionMS, d.Abnormal)
		fmt.Fprintf(w, "                closes on the drained server: %s\n", countMap(d.ClosesOnDrained))
	}
	if p.FatalError != "" {
		fmt.Fprintf(w, "  FATAL         %s\n", p.FatalError)
	}
}

// sendLag shows how far behind real time vgload's senders were; past one
// frame it flags the row: the client, not the server, was short of CPU.
func sendLag(s Summary) string {
	if s.Count == 0 {
		return "—"
	}
	if s.P99 > float64(voiceclient.FrameDuration/time.Millisecond) {
		return msf(s.P99) + " ⚠"
	}
	return msf(s.P99)
}
