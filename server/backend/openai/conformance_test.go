package openai

import (
	"testing"

	"github.com/voicegateway/voicegateway/server/backend/backendtest"
	"github.com/voicegateway/voicegateway/server/backend/openai/openaitest"
)

// TestConformance runs the checks every backend passes against the
// openaitest stand-in, which speaks the OpenAI Realtime API's events with
// turn detection off and answers each response.create with the last
// committed audio.
func TestConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backendtest.Target {
		e := newEnv(t, openaitest.Options{}, nil)
		return backendtest.Target{
			Backend:     e.b,
			Connections: e.up.OpenConns,
			EchoesAudio: true,
			Deafen: func(t *testing.T, s *backendtest.Session) func() {
				up := e.upstreamConn(len(e.up.Conns()))
				up.SetDeaf(true)
				return func() { up.SetDeaf(false) }
			},
			Break: func(t *testing.T, s *backendtest.Session) {
				// The upstream of the session opened last drops its
				// connection.
				e.upstreamConn(len(e.up.Conns())).Inject(openaitest.FaultDrop)
			},
			Unreachable: func(*testing.T) { e.up.Close() },
		}
	})
}
