package echo_test

import (
	"testing"
	"time"

	"k8s.io/utils/clock"

	"github.com/voicegateway/voicegateway/server/backend/backendtest"
	"github.com/voicegateway/voicegateway/server/backend/echo"
)

// TestConformance runs the checks every backend passes, on the real clock:
// the suite waits for paced audio as a client would.
func TestConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backendtest.Target {
		return backendtest.Target{
			Backend:          echo.New(clock.RealClock{}),
			AnswersCommit:    true,
			EchoesAudio:      true,
			MaxBufferedAudio: 60 * time.Second,
		}
	})
}
