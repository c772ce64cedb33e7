package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image/color"
	"math"
	"slices"
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

// Row is one load run against both servers, once or in several rounds.
type Row struct {
	Kind     string `json:"kind"` // talking or idle
	Sessions int    `json:"sessions"`
	// VoiceServer and Node are each side's medians over Rounds (frame
	// counts: sums), as the table and the chart show them; a report.json
	// from before rounds holds its one run here and no Rounds.
	VoiceServer Side `json:"voice_server"`
	Node        Side `json:"node_peer"`
	// LoadAvg is the machine's 1-minute load average when the row began:
	// other work on a shared machine shows in its figures.
	LoadAvg string `json:"load_avg"`
	// Rounds are every run of this load, in the order run: the figures
	// behind the medians, and the pairs the ratio's range is taken over.
	Rounds []Round `json:"rounds,omitempty"`
}

// Round is one run of a load against each server, back to back: the pair
// a per-round ratio compares, close enough in time to share the machine's
// mood of the moment.
type Round struct {
	VoiceServer Side `json:"voice_server"`
	Node        Side `json:"node_peer"`
	// NodeFirst: the Node peer ran before the voice server in this round.
	// The order alternates round by round (A B, B A, A B, …), so a drift
	// of the machine over a row weighs on both sides alike.
	NodeFirst bool   `json:"node_first,omitempty"`
	LoadAvg   string `json:"load_avg"` // 1-minute load average when the round began
}

// UnmarshalJSON reads a row from before rounds (one run per side, no
// "rounds") as a row of one round, and takes the medians afresh from the
// rounds, so that a replot follows the aggregation as it is now.
func (r *Row) UnmarshalJSON(data []byte) error {
	type plain Row // without this method
	var p plain
	if err := json.Unmarshal(data, &p); err != nil {
		return err
	}
	if len(p.Rounds) == 0 {
		p.Rounds = []Round{{VoiceServer: p.VoiceServer, Node: p.Node, LoadAvg: p.LoadAvg}}
	}
	*r = summarize(p.Kind, p.Sessions, p.Rounds)
	if p.LoadAvg != "" {
		r.LoadAvg = p.LoadAvg
	}
	return nil
}

// summarize is the row of a load's rounds: each side's medians.
func summarize(kind string, sessions int, rounds []Round) Row {
	r := Row{Kind: kind, Sessions: sessions, Rounds: rounds}
	var gw, node []Side
	for _, round := range rounds {
		gw, node = append(gw, round.VoiceServer), append(node, round.Node)
	}
	r.VoiceServer, r.Node = medianSide(gw), medianSide(node)
	if len(rounds) > 0 {
		r.LoadAvg = rounds[0].LoadAvg
	}
	return r
}

// medianSide is the median of each figure over the runs that did not fail,
// a figure unknown in a run left out of its median; frame counts are
// summed. With no run that succeeded it carries the first run's error.
func medianSide(runs []Side) Side {
	var ok []Side
	for _, s := range runs {
		if !failed(s) {
			ok = append(ok, s)
		}
	}
	if len(ok) == 0 {
		if len(runs) == 0 {
			return Side{Error: "not run"}
		}
		return Side{Error: runs[0].Error}
	}
	if len(ok) == 1 {
		return ok[0] // as measured, no rounding through float64
	}
	// med is the median of the known values of a figure, or unknownValue.
	med := func(value func(Side) float64, known func(float64) bool, unknownValue float64) float64 {
		var xs []float64
		for _, s := range ok {
			if v := value(s); known(v) {
				xs = append(xs, v)
			}
		}
		if m, found := median(xs); found {
			return m
		}
		return unknownValue
	}
	nonNegative := func(v float64) bool { return v >= 0 }
	positive := func(v float64) bool { return v > 0 }
	var m Side
	m.CPUCores = med(func(s Side) float64 { return s.CPUCores }, nonNegative, -1)
	m.CPUSystemCores = med(func(s Side) float64 { return s.CPUSystemCores }, nonNegative, -1)
	m.ClientCPUCores = med(func(s Side) float64 { return s.ClientCPUCores }, nonNegative, -1)
	m.ClientCPUSystemCores = med(func(s Side) float64 { return s.ClientCPUSystemCores }, nonNegative, -1)
	m.PeakRSSBytes = uint64(math.Round(med(func(s Side) float64 { return float64(s.PeakRSSBytes) }, positive, 0)))
	m.SessionsReady = int64(math.Round(med(func(s Side) float64 { return float64(s.SessionsReady) }, nonNegative, 0)))
	var perIdle, p50, p99 []float64
	for _, s := range ok {
		if s.SessionsReady > 0 {
			perIdle = append(perIdle, s.IdleBytesPerSession)
		}
		if s.FramesSent > 0 {
			p50, p99 = append(p50, s.P50LatenessMS), append(p99, s.P99LatenessMS)
		}
		m.FramesSent += s.FramesSent
		m.FramesLost += s.FramesLost
		m.FramesLate += s.FramesLate
	}
	m.IdleBytesPerSession, _ = median(perIdle)
	m.P50LatenessMS, _ = median(p50)
	m.P99LatenessMS, _ = median(p99)
	m.SendLagP99MS = med(func(s Side) float64 { return s.SendLagP99MS }, nonNegative, 0)
	return m
}

// median is the middle of xs, or the mean of its two middle values when
// their number is even; found is false for no values.
func median(xs []float64) (m float64, found bool) {
	if len(xs) == 0 {
		return 0, false
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	mid := len(s) / 2
	if len(s)%2 == 1 {
		return s[mid], true
	}
	return (s[mid-1] + s[mid]) / 2, true
}

// rounds are the row's runs: its Rounds, or for a row built without them
// its one pair of sides.
func (r Row) rounds() []Round {
	if len(r.Rounds) > 0 {
		return r.Rounds
	}
	return []Round{{VoiceServer: r.VoiceServer, Node: r.Node, LoadAvg: r.LoadAvg}}
}

// roundRatios are voice server ÷ Node of each round in which both sides
// have the figure the row's ratio compares (CPU while talking, memory per
// idle session), in the order run.
func (r Row) roundRatios() []float64 {
	var out []float64
	for _, round := range r.rounds() {
		gw, node := round.VoiceServer, round.Node
		if failed(gw) || failed(node) {
			continue
		}
		a, b := gw.CPUCores, node.CPUCores
		if r.Kind == idle {
			if gw.SessionsReady == 0 || node.SessionsReady == 0 {
				continue
			}
			a, b = gw.IdleBytesPerSession, node.IdleBytesPerSession
		}
		if a >= 0 && b > 0 {
			out = append(out, a/b)
		}
	}
	return out
}

// ratioColumn is the median of the per-round ratios and, over more than
// one round, their range: "1.12× (0.95–1.30)". The median of the pairs
// rather than a quotient of medians: each pair ran minutes apart at most,
// on the same machine load, which is what the ratio is for.
func (r Row) ratioColumn() string {
	rs := r.roundRatios()
	m, found := median(rs)
	if !found {
		return unknown
	}
	if len(r.rounds()) == 1 {
		return fmt.Sprintf("%.2f×", m)
	}
	return fmt.Sprintf("%.2f× (%.2f–%.2f)", m, slices.Min(rs), slices.Max(rs))
}

// loadAvgColumn is the row's load average, or over several rounds the
// range of the rounds' load averages at their starts.
func (r Row) loadAvgColumn() string {
	rounds := r.rounds()
	if len(rounds) == 1 {
		return r.LoadAvg
	}
	var xs []float64
	for _, round := range rounds {
		if v, err := strconv.ParseFloat(round.LoadAvg, 64); err == nil {
			xs = append(xs, v)
		}
	}
	if len(xs) == 0 {
		return r.LoadAvg
	}
	return fmt.Sprintf("%.2f–%.2f", slices.Min(xs), slices.Max(xs))
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
				r.Sessions, cores(gw), cores(node), r.ratioColumn(),
				kernelCores(gw), kernelCores(node), mib(gw), mib(node), lateness(gw), lateness(node), lost(gw), lost(node), r.loadAvgColumn())
		case idle:
			fmt.Fprintf(&b, "| %d idle sessions | %s | %s | %s | | %s | %s | | | %s |\n",
				r.Sessions, perIdle(gw), perIdle(node), r.ratioColumn(),
				mib(gw), mib(node), r.loadAvgColumn())
		}
	}
	return b.String()
}

// legend explains the table's marks, and names the runs that failed in a
// row whose medians stand on the others; empty when there is nothing to say.
func legend(rows []Row) string {
	var b strings.Builder
	for _, r := range rows {
		if r.VoiceServer.SendLagP99MS > starvedLag || r.Node.SendLagP99MS > starvedLag {
			fmt.Fprintf(&b, "⚠: vgload's send lag p99 passed %.0f ms in that run: the load client itself was starved of CPU, so its lateness measures the client as much as the server.\n", starvedLag)
			break
		}
	}
	for _, r := range rows {
		rounds := r.rounds()
		for _, side := range []struct {
			name   string
			median Side
			get    func(Round) Side
		}{
			{"voice server", r.VoiceServer, func(x Round) Side { return x.VoiceServer }},
			{"Node peer", r.Node, func(x Round) Side { return x.Node }},
		} {
			if failed(side.median) {
				continue // the row shows — already
			}
			for i, round := range rounds {
				if s := side.get(round); failed(s) {
					fmt.Fprintf(&b, "%d %s sessions: the %s failed in round %d of %d (%s); its figures are the other rounds'.\n",
						r.Sessions, r.Kind, side.name, i+1, len(rounds), s.Error)
				}
			}
		}
	}
	return b.String()
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
