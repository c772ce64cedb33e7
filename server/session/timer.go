package session

import (
	"time"

	"github.com/voicegateway/voicegateway/server/backend"
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
	next := min(untilIdle, untilMax)
	if at, _, _, ok := s.endNotice(); ok && !s.endNoticed {
		next = min(next, at.Sub(now))
	}
	return max(next, 0)
}

// endNotice is when the client is told that the session will end (at
// end, for reason), with a resume handle to carry the conversation into a
// new session: Config.ResumeNotice before --max-duration, or before the
// backend's own cap when that comes first.
func (s *Session) endNotice() (at, end time.Time, reason string, ok bool) {
	before := s.opts.Config.ResumeNotice
	if before <= 0 || s.opts.Sealer == nil {
		return time.Time{}, time.Time{}, "", false
	}
	end, reason = s.started.Add(s.opts.Config.MaxDuration), string(protocol.CodeMaxDuration)
	if c, capped := s.opts.Backend.(backend.Capped); capped && c.MaxSessionLength() > 0 {
		if capEnd := s.started.Add(c.MaxSessionLength()); capEnd.Before(end) {
			end, reason = capEnd, "backend_session_cap"
		}
	}
	if end.Sub(s.started) <= before {
		// A session shorter than the notice gets none: it would come at
		// its start.
		return time.Time{}, time.Time{}, "", false
	}
	return end.Add(-before), end, reason, true
}

// noticeEnd queues the notice before the session's end, once.
func (s *Session) noticeEnd(end time.Time, reason string) {
	s.endNoticed = true
	s.pushEvent(&protocol.DrainingEvent{
		EventHeader: protocol.EventHeader{Type: protocol.TypeGatewayDraining},
		Deadline:    end.UTC(), Reason: reason, Resume: s.resumeHandle(end),
	}, false)
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
		if at, end, reason, ok := s.endNotice(); ok && !s.endNoticed && !now.Before(at) {
			s.noticeEnd(end, reason)
		}
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
