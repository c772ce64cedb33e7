package main

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/voicegateway/voicegateway/internal/testbin"
	"github.com/voicegateway/voicegateway/internal/testkit"
)

// demoDrain is `make demo-drain`'s program.
var demoDrain = testbin.New("github.com/voicegateway/voicegateway/hack/demo-drain")

// TestBrowserDemoDrain is `make demo-drain` as a newcomer sees it: the demo
// page in Chromium through the program's proxy talks to one of its two
// servers; a drain (SIGUSR1, as Enter) shows the notice with its countdown,
// the call moves to the other server with no error, the "Moved" banner
// clears after the move, and hanging up shows a normal end, not a red
// "closed".
func TestBrowserDemoDrain(t *testing.T) {
	requireChromium(t)
	demo := testkit.Start(t, demoDrain.Path(t), "--voice-server", voiceServer.Path(t), "--listen", "127.0.0.1:0", "--drain-timeout", "20s")
	browser := startBrowser(t, writeToneWAV(t, t.TempDir()))
	ctx, cancel := context.WithTimeout(browser.ctx, 3*time.Minute)
	defer cancel()

	browser.startTalking(ctx, "http://"+demo.Public+"/?processing=off")
	st := browser.waitFor(ctx, "half a second of echo", func(s pageStats) bool { return s.SamplesReceived >= 12000 })
	if st.State != "open" || len(st.SessionIDs) != 1 {
		t.Fatalf("state %q sessions %v", st.State, st.SessionIDs)
	}

	demo.Signal(syscall.SIGUSR1) // Enter
	notice := browser.waitForDemo(ctx, "the drain notice's countdown", func(s demoStats) bool { return s.DrainCountdown != nil })
	if !strings.Contains(notice.Banner, "s left on this server") || *notice.DrainCountdown <= 0 || *notice.DrainCountdown > 20 {
		t.Errorf("drain notice %q, countdown %v; want the seconds left before the 20 s deadline", notice.Banner, *notice.DrainCountdown)
	}
	moved := browser.waitForDemo(ctx, "the move", func(s demoStats) bool { return len(s.Moves) == 1 })
	if moved.BannerKind != "moved" || moved.DrainCountdown != nil {
		t.Errorf("after the move: banner %q (%s), countdown %v; want the Moved banner and no countdown", moved.Banner, moved.BannerKind, moved.DrainCountdown)
	}
	// The two servers of make demo-drain share a fleet Secret: the move
	// kept the conversation, and the page says so.
	kept := browser.waitForDemo(ctx, "the conversation kept", func(s demoStats) bool {
		return len(s.Resumes) == 1 && strings.Contains(s.Banner, "conversation kept")
	})
	if kept.Moves[0].From != kept.Moves[0].To {
		t.Errorf("the move %+v did not continue the session", kept.Moves[0])
	}
	shot := browser.screenshot(ctx, "demo-drain-moved.png")
	cleared := browser.waitForDemo(ctx, "the Moved banner to clear", func(s demoStats) bool { return s.Banner == "" })
	st = browser.waitFor(ctx, "echo from the other server", func(s pageStats) bool { return s.SamplesReceived >= cleared.SamplesReceived+12000 })
	if len(st.Errors) > 0 || st.State != "open" || len(st.SessionIDs) != 2 {
		t.Errorf("after the move: errors %+v, state %q, sessions %v; want none, open, two", st.Errors, st.State, st.SessionIDs)
	}

	// Hanging up is a normal end.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#talk"))); err != nil {
		t.Fatal(err)
	}
	ended := browser.waitForDemo(ctx, "the end of the call", func(s demoStats) bool { return s.State == "ended" })
	class, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById('state').className`))
	if err != nil {
		t.Fatal(err)
	}
	if ended.BannerKind != "ended" || strings.Contains(class, "closed") || len(ended.Errors) > 0 {
		t.Errorf("after hanging up: banner %q (%s), state class %q, errors %+v; want a normal end", ended.Banner, ended.BannerKind, class, ended.Errors)
	}
	// The page stays ended: the client's own close does not turn it red.
	time.Sleep(500 * time.Millisecond)
	if again, _ := browser.demoStats(ctx); again.State != "ended" {
		t.Errorf("state %q after the hang-up settled, want ended", again.State)
	}
	endShot := browser.screenshot(ctx, "demo-drain-ended.png")
	browser.stop()

	// The drained server was started again; Ctrl-C stops everything.
	testkit.Eventually(t, 60*time.Second, testkit.That("the drained server started again", func() bool {
		logs := demo.Logs()
		i := strings.Index(logs, "drained and exited")
		return i >= 0 && strings.Contains(logs[i:], ": sessions on 127.0.0.1:")
	}))
	demo.Signal(syscall.SIGINT)
	if code := demo.WaitExit(60 * time.Second); code != 0 {
		t.Errorf("demo-drain exit code %d", code)
	}
	t.Logf("screenshots: %s (moved), %s (hung up)", shot, endShot)
}

// demoStats is the part of window.__vgw the demo's states are read from.
type demoStats struct {
	pageStats
	Banner         string   `json:"banner"`
	BannerKind     string   `json:"bannerKind"`
	DrainCountdown *float64 `json:"drainCountdown"`
}

func (b *browser) demoStats(ctx context.Context) (demoStats, error) {
	return chromedp.Run(ctx, chromedp.Evaluate[demoStats](`window.__vgw || {}`))
}

func (b *browser) waitForDemo(ctx context.Context, what string, cond func(demoStats) bool) demoStats {
	b.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := b.demoStats(ctx)
		if err == nil && cond(st) {
			return st
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			b.t.Fatalf("waiting for %s: %v; page: %+v", what, err, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
