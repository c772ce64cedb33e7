package session

import (
	"time"

	"github.com/voicegateway/voicegateway/server/protocol"
)

// armTimer starts the session's single timer, which enforces both the idle
// timeout and the maximum duration. Re-arming on each fire, instead of
// resetting on each message, keeps the per-message cost to one atomic store.
func (s *Session) armTimer() {
	s.timerMu.Lock()
	defer s.timerMu.Unlock()
	if s.timerStopped {
		return
	}
	s.timer = s.opts.Clock.AfterFunc(s.nextDeadline(), s.onTimer)
}

func (s *Session) nextDeadline() time.Duration {
	now := s.opts.Clock.Now()
	untilIdle := time.Unix(0, s.lastAct.Load()).Add(s.opts.Config.IdleTimeout).Sub(now)
	untilMax := s.started.Add(s.opts.Config.MaxDuration).Sub(now)
	return max(min(untilIdle, untilMax), 0)
}

func (s *Session) onTimer() {
	now := s.opts.Clock.Now()
	switch {
	case !now.Before(s.started.Add(s.opts.Config.MaxDuration)):
		s.Fail(protocol.Fatal(protocol.CodeMaxDuration, protocol.ClosePolicyViolation, "session reached its maximum duration"))
	case !now.Before(time.Unix(0, s.lastAct.Load()).Add(s.opts.Config.IdleTimeout)):
		s.Fail(protocol.Fatal(protocol.CodeIdleTimeout, protocol.ClosePolicyViolation, "session was idle too long"))
	default:
		s.armTimer()
	}
}

// stopTimer stops the timer for good; a fire already running cannot re-arm.
func (s *Session) stopTimer() {
	s.timerMu.Lock()
	defer s.timerMu.Unlock()
	s.timerStopped = true
	if s.timer != nil {
		s.timer.Stop()
	}
}
