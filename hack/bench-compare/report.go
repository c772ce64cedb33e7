package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image/color"
	"math"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// Load kinds: sessions that talk in real time, or that connect and hold.
const (
	talking = "talking"
	idle    = "idle"
)

// Side is what one load measured on one server process.
type Side struct {
	// CPUCores is the server's CPU seconds (utime+stime) per wall second
	// over the steady state only; -1 when unknown.
	CPUCores float64 `json:"cpu_cores"`
	// CPUSystemCores is the kernel's part of CPUCores (stime alone): the
	// socket work both servers do for the same frames, so that what they
	// differ in shows as user time. -1 when unknown, as in a report
	// written before it was measured.
	CPUSystemCores float64 `json:"cpu_system_cores"`
	// PeakRSSBytes is the server's VmHWM when the load ended: its largest
	// resident set over the run.
	PeakRSSBytes uint64 `json:"peak_rss_bytes"`
	// IdleBytesPerSession is the growth of the server's RSS per idle
	// session held (idle loads only).
	IdleBytesPerSession float64 `json:"idle_rss_per_session_bytes,omitempty"`
	// Echo lateness: how long after it could first be played an echoed
	// frame arrived (vgload's round trip), over the steady state.
	P50LatenessMS float64 `json:"p50_echo_lateness_ms"`
	P99LatenessMS float64 `json:"p99_echo_lateness_ms"`
	FramesSent    int64   `json:"frames_sent"`
	FramesLost    int64   `json:"frames_lost"`
	FramesLate    int64   `json:"frames_late"`
	SessionsReady int64   `json:"sessions_ready"`
	// The load client's own CPU and how late it sent its frames: a send
	// lag p99 over one frame means vgload was starved, not the server.
	ClientCPUCores       float64 `json:"vgload_cpu_cores"`
	ClientCPUSystemCores float64 `json:"vgload_cpu_system_cores"` // -1 unknown
	SendLagP99MS         float64 `json:"vgload_send_lag_p99_ms"`
	// Error is why this side has no figures (the run failed).
	Error string `json:"error,omitempty"`
}

// UnmarshalJSON reads a side whose kernel CPU is missing (a report.json
// from before it was measured) as unknown, not as zero.
func (s *Side) UnmarshalJSON(data []byte) error {
	type plain Side // without this method
	p := plain{CPUSystemCores: -1, ClientCPUSystemCores: -1}
	if err := json.Unmarshal(data, &p); err != nil {
		return err
	}
	*s = Side(p)
	return nil
}

// Row is one load run against both servers.
type Row struct {
	Kind        string `json:"kind"` // talking or idle
	Sessions    int    `json:"sessions"`
	VoiceServer Side   `json:"voice_server"`
	Node        Side   `json:"node_peer"`
	// LoadAvg is the machine's 1-minute load average when the row began:
	// other work on a shared machine shows in its figures.
	LoadAvg string `json:"load_avg"`
}

// starvedLag is the send lag past which a row's client could not keep real
// time: one frame.
const starvedLag = 20.0

const kib = 1024.0

// markdownTable is the table with a ratio column: voice server CPU
// ÷ Node CPU for talking loads, memory per idle session ÷ Node's for idle;
// and, for talking loads, the kernel's part of each side's CPU.
func markdownTable(rows []Row) string {
	var b strings.Builder
	b.WriteString("| load | voice server CPU | Node peer CPU | voice server ÷ Node | kernel CPU voice server / Node | voice server peak RSS | Node peak RSS | p99 echo lateness voice server / Node | frames lost voice server / Node | load average |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		gw, node := r.VoiceServer, r.Node
		switch r.Kind {
		case talking:
			fmt.Fprintf(&b, "| %d talking sessions | %s | %s | %s | %s / %s cores | %s | %s | %s / %s ms | %s / %s | %s |\n",
				r.Sessions, cores(gw), cores(node), ratio(gw.CPUCores, node.CPUCores, gw.Error, node.Error),
				kernelCores(gw), kernelCores(node), mib(gw), mib(node), lateness(gw), lateness(node), lost(gw), lost(node), r.LoadAvg)
		case idle:
			fmt.Fprintf(&b, "| %d idle sessions | %s | %s | %s | | %s | %s | | | %s |\n",
				r.Sessions, perIdle(gw), perIdle(node), ratio(gw.IdleBytesPerSession, node.IdleBytesPerSession, gw.Error, node.Error),
				mib(gw), mib(node), r.LoadAvg)
		}
	}
	return b.String()
}

// legend explains the table's marks; empty when there are none.
func legend(rows []Row) string {
	for _, r := range rows {
		if r.VoiceServer.SendLagP99MS > starvedLag || r.Node.SendLagP99MS > starvedLag {
			return fmt.Sprintf("⚠: vgload's send lag p99 passed %.0f ms in that run: the load client itself was starved of CPU, so its lateness measures the client as much as the server.\n", starvedLag)
		}
	}
	return ""
}

const unknown = "—"

func failed(s Side) bool { return s.Error != "" }

func cores(s Side) string {
	if failed(s) || s.CPUCores < 0 {
		return unknown
	}
	return fmt.Sprintf("%.2f cores", s.CPUCores)
}

// kernelCores is the kernel's part of a side's CPU, in cores.
func kernelCores(s Side) string {
	if failed(s) || s.CPUSystemCores < 0 {
		return unknown
	}
	return fmt.Sprintf("%.2f", s.CPUSystemCores)
}

func mib(s Side) string {
	if failed(s) || s.PeakRSSBytes == 0 {
		return unknown
	}
	return fmt.Sprintf("%.0f MiB", float64(s.PeakRSSBytes)/kib/kib)
}

func perIdle(s Side) string {
	if failed(s) || s.SessionsReady == 0 {
		return unknown
	}
	return fmt.Sprintf("%.1f KiB each", s.IdleBytesPerSession/kib)
}

func lateness(s Side) string {
	if failed(s) || s.FramesSent == 0 {
		return unknown
	}
	mark := ""
	if s.SendLagP99MS > starvedLag {
		mark = " ⚠"
	}
	return fmt.Sprintf("%.1f%s", s.P99LatenessMS, mark)
}

func lost(s Side) string {
	if failed(s) || s.FramesSent == 0 {
		return unknown
	}
	return fmt.Sprint(s.FramesLost)
}

// ratio is a ÷ b, or a dash when either side is unknown or b is not
// positive.
func ratio(a, b float64, errA, errB string) string {
	if errA != "" || errB != "" || a < 0 || b <= 0 {
		return unknown
	}
	return fmt.Sprintf("%.2f×", a/b)
}

// Colors of the two sides in the chart.
var (
	voiceServerColor = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	nodeColor        = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
)

// chartSVG draws three panels side by side, voice server beside Node in
// each: CPU per talking session, peak RSS per talking session, and RSS per
// idle session, each against the session count.
func chartSVG(rows []Row) ([]byte, error) {
	cpu := newPanel("CPU per talking session", "talking sessions", "millicores per session")
	rss := newPanel("Peak RSS per talking session", "talking sessions", "KiB per session")
	idleMem := newPanel("RSS per idle session", "idle sessions", "KiB per session")
	for _, side := range []struct {
		name  string
		color color.Color
		get   func(Row) Side
	}{
		{"voice server", voiceServerColor, func(r Row) Side { return r.VoiceServer }},
		{"Node ws peer", nodeColor, func(r Row) Side { return r.Node }},
	} {
		var cpuPts, rssPts, idlePts plotter.XYs
		for _, r := range rows {
			s := side.get(r)
			if failed(s) || r.Sessions <= 0 {
				continue
			}
			n := float64(r.Sessions)
			switch r.Kind {
			case talking:
				if s.CPUCores >= 0 {
					cpuPts = append(cpuPts, plotter.XY{X: n, Y: s.CPUCores * 1000 / n})
				}
				if s.PeakRSSBytes > 0 {
					rssPts = append(rssPts, plotter.XY{X: n, Y: float64(s.PeakRSSBytes) / kib / n})
				}
			case idle:
				if s.SessionsReady > 0 {
					idlePts = append(idlePts, plotter.XY{X: n, Y: s.IdleBytesPerSession / kib})
				}
			}
		}
		for _, p := range []struct {
			plot *plot.Plot
			pts  plotter.XYs
		}{{cpu, cpuPts}, {rss, rssPts}, {idleMem, idlePts}} {
			if err := addSeries(p.plot, side.name, side.color, p.pts); err != nil {
				return nil, err
			}
		}
	}
	for _, p := range []*plot.Plot{cpu, rss, idleMem} {
		axesFromZero(p)
	}
	const width, height = 30 * vg.Centimeter, 10 * vg.Centimeter
	canvas := vgsvg.New(width, height)
	tiles := draw.Tiles{Rows: 1, Cols: 3, PadX: vg.Centimeter, PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 4}
	panels := [][]*plot.Plot{{cpu, rss, idleMem}}
	for j, c := range plot.Align(panels, tiles, draw.New(canvas))[0] {
		panels[0][j].Draw(c)
	}
	var buf bytes.Buffer
	if _, err := canvas.WriteTo(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func newPanel(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = x
	p.Y.Label.Text = y
	p.Legend.Top = true
	p.X.Tick.Marker = roundTicks{}
	p.Y.Tick.Marker = roundTicks{}
	p.Add(plotter.NewGrid())
	return p
}

// roundTicks marks an axis at four to seven round steps (1, 2, 2.5 or 5 times
// a power of ten), labelled with no more digits than the step needs; the
// default marker leaves as few as two labels on these short ranges.
type roundTicks struct{}

func (roundTicks) Ticks(lo, hi float64) []plot.Tick {
	step := roundStep((hi - lo) / 6)
	decimals := 0
	for decimals < 6 && math.Abs(step*math.Pow10(decimals)-math.Round(step*math.Pow10(decimals))) > 1e-9 {
		decimals++
	}
	var ticks []plot.Tick
	for i := math.Ceil(lo / step); i*step <= hi+step*1e-9; i++ {
		v := i * step
		ticks = append(ticks, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', decimals, 64)})
		if v+step/2 <= hi {
			ticks = append(ticks, plot.Tick{Value: v + step/2})
		}
	}
	return ticks
}

// roundStep is the smallest of 1, 2, 2.5 and 5 times a power of ten that is
// at least x.
func roundStep(x float64) float64 {
	if x <= 0 || math.IsInf(x, 0) || math.IsNaN(x) {
		return 1
	}
	p := math.Pow10(int(math.Floor(math.Log10(x))))
	for _, m := range []float64{1, 2, 2.5, 5} {
		if m*p >= x {
			return m * p
		}
	}
	return 10 * p
}

// addSeries draws pts as a line with points; a series with no points is
// left out (that side failed at every load of the panel).
func addSeries(p *plot.Plot, name string, c color.Color, pts plotter.XYs) error {
	if len(pts) == 0 {
		return nil
	}
	line, points, err := plotter.NewLinePoints(pts)
	if err != nil {
		return err
	}
	line.Color = c
	line.Width = vg.Points(1.5)
	points.Color = c
	points.Shape = draw.CircleGlyph{}
	points.Radius = vg.Points(3)
	p.Add(line, points)
	p.Legend.Add(name, line, points)
	return nil
}

// axesFromZero starts both axes at zero, leaves headroom above the highest
// point for the legend, and gives a panel with no data a range to draw its
// axes on.
func axesFromZero(p *plot.Plot) {
	p.X.Min = 0
	if p.X.Max <= 0 {
		p.X.Max = 1
	}
	p.X.Max *= 1.1
	p.Y.Min = 0
	if p.Y.Max <= 0 {
		p.Y.Max = 1
	}
	p.Y.Max *= 1.35
}
