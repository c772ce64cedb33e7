package session_test

import (
	"bytes"
	"net/url"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"

	"github.com/voicegateway/voicegateway/server/resume"
	"github.com/voicegateway/voicegateway/server/session"
	"github.com/voicegateway/voicegateway/server/session/sessiontest"
)

func withSealer(t *testing.T) option {
	s, err := resume.NewSealer(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return func(a *session.Acceptor) { a.Options.Sealer = s }
}

func sessionIDOf(frames []sessiontest.Frame) string {
	for _, f := range frames {
		if f.Type() == "session.created" {
			g, _ := f.Event["gateway"].(map[string]any)
			id, _ := g["session_id"].(string)
			return id
		}
	}
	return ""
}

// TestNoticeBeforeMaxDuration: ResumeNotice before --max-duration the
// client gets gateway.draining (reason max_duration) with a resume handle;
// a new session presenting it continues the session id and says
// gateway.resumed; once the handle has expired it is refused with
// resume_expired and the session starts afresh.
func TestNoticeBeforeMaxDuration(t *testing.T) {
	clk := testingclock.NewFakeClock(time.Now())
	h := serve(t, func(c *session.Config) {
		c.IdleTimeout, c.MaxDuration, c.ResumeNotice = time.Hour, 2*time.Minute, 30*time.Second
	}, withClock(clk), withSealer(t))
	c := h.dial("", nil)
	id := sessionIDOf(sessiontest.ReadUntil(t, c, "session.created"))
	h.waitSessions(1)
	clk.Step(90 * time.Second)
	frames := sessiontest.ReadUntil(t, c, "gateway.draining")
	notice := frames[len(frames)-1].Event
	handle, _ := notice["resume"].(string)
	if notice["reason"] != "max_duration" || handle == "" {
		t.Fatalf("notice %v", notice)
	}

	c2 := h.dial("resume="+url.QueryEscape(handle), nil)
	frames = sessiontest.ReadUntil(t, c2, "gateway.resumed")
	if got := sessionIDOf(frames); got != id {
		t.Fatalf("resumed session id %q, want %q", got, id)
	}

	// The handle expires a minute after the session's end.
	clk.Step(30*time.Second + time.Minute)
	c3 := h.dial("resume="+url.QueryEscape(handle), nil)
	frames = sessiontest.ReadUntil(t, c3, "session.created")
	if got := sessionIDOf(frames); got == id || frames[0].ErrorCode() != "resume_expired" {
		t.Fatalf("an expired handle: session %q, first frame %v", got, frames[0].Event)
	}
	if n := h.counter("errors", "resume_expired"); n != 1 {
		t.Errorf("resume_expired counted %v times", n)
	}
}
