package gateway

import (
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/voicegateway/voicegateway/server/config"
	"github.com/voicegateway/voicegateway/server/session/sessiontest"
)

// TestNoGoroutinesOutliveTheServer runs sessions through every ending and
// checks that nothing the server started is left once Serve returns.
func TestNoGoroutinesOutliveTheServer(t *testing.T) {
	baseline := goleak.IgnoreCurrent()
	func() {
		h := start(t, func(c *config.Config) { c.Sessions.MaxMessageBytes = 2048 })
		a := h.dial("audio=binary", nil)
		sessiontest.ReadUntil(t, a, "session.created")
		sessiontest.SendRaw(t, a, websocket.MessageBinary, sessiontest.Tone(4000))
		sessiontest.ReadClose(t, a)
		b := h.dial("", nil)
		sessiontest.ReadUntil(t, b, "session.created")
		b.CloseNow()
		c := h.dial("audio=binary", nil)
		sessiontest.ReadUntil(t, c, "session.created")
		sessiontest.SendRaw(t, c, websocket.MessageBinary, sessiontest.Tone(2000))
		sessiontest.Send(t, c, map[string]any{"type": "input_audio_buffer.commit"})
		h.srv.ForceDrain()
		if err := h.wait(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		c.CloseNow()
		http.DefaultClient.CloseIdleConnections()
	}()
	goleak.VerifyNone(t, baseline)
}
