package session

import (
	"time"

	"github.com/voicegateway/voicegateway/server/protocol"
)

// The session's single timer enforces both the idle timeout and the maximum
// duration. Its callback only flags the outbox and starts or wakes the
// writer, which does the checking: the callback must not call the clock (a
// fake clock runs callbacks under its lock) and no goroutine has to wait on
// the timer while the session idles. Re-arming when it fires, instead of
// resetting on every message, keeps the per-message cost to one atomic store.

func (s *Session) untilNextCheck() time.Duration {
	now := s.opts.Clock.Now()
	untilIdle := time.Unix(0, s.lastAct.Load()).Add(s.opts.Config.IdleTimeout).Sub(now)
	untilMax := s.started.Add(s.opts.Config.MaxDuration).Sub(now)
	return max(min(untilIdle, untilMax), 0)
}

// checkTimeouts runs on the writer when the timer fired: it ends the
// session or re-arms the timer.
func (s *Session) checkTimeouts() {
	now := s.opts.Clock.Now()
	switch {
	case !now.Before(s.started.Add(s.opts.Config.MaxDuration)):
		s.Fail(protocol.Fatal(protocol.CodeMaxDuration, protocol.ClosePolicyViolation, "session reached its maximum duration"))
	case !now.Before(time.Unix(0, s.lastAct.Load()).Add(s.opts.Config.IdleTimeout)):
		s.Fail(protocol.Fatal(protocol.CodeIdleTimeout, protocol.ClosePolicyViolation, "session was idle too long"))
	default:
		// A fake clock also sends on a fired AfterFunc timer's channel and
		// blocks on the next firing if nobody took the value; a real
		// AfterFunc timer has no channel. Drain it either way.
		select {
		case <-s.timer.C():
		default:
		}
		s.timer.Reset(s.untilNextCheck())
	}
}
