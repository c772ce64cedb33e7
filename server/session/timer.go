package session

import (
	"time"

	"github.com/voicegateway/voicegateway/server/protocol"
)

// The session's single timer enforces both the idle timeout and the maximum
// duration. It is a timer channel that the writer goroutine selects on, not
// a callback: no extra goroutine exists per session, and when the writer
// exits the timer is stopped with it. Re-arming when it fires, instead of
// resetting on every message, keeps the per-message cost to one atomic store.

func (s *Session) untilNextCheck() time.Duration {
	now := s.opts.Clock.Now()
	untilIdle := time.Unix(0, s.lastAct.Load()).Add(s.opts.Config.IdleTimeout).Sub(now)
	untilMax := s.started.Add(s.opts.Config.MaxDuration).Sub(now)
	return max(min(untilIdle, untilMax), 0)
}

// checkTimeouts runs when the timer fires: it ends the session or re-arms.
func (s *Session) checkTimeouts() {
	now := s.opts.Clock.Now()
	switch {
	case !now.Before(s.started.Add(s.opts.Config.MaxDuration)):
		s.Fail(protocol.Fatal(protocol.CodeMaxDuration, protocol.ClosePolicyViolation, "session reached its maximum duration"))
	case !now.Before(time.Unix(0, s.lastAct.Load()).Add(s.opts.Config.IdleTimeout)):
		s.Fail(protocol.Fatal(protocol.CodeIdleTimeout, protocol.ClosePolicyViolation, "session was idle too long"))
	default:
		s.timer.Reset(s.untilNextCheck())
	}
}
