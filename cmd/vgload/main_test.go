package main

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/voicegateway/voicegateway/internal/testbin"
)

// voiceServer is the real server the end-to-end tests load.
var (
	voiceServer  = testbin.New("github.com/voicegateway/voicegateway/cmd/voice-server")
	vgloadBinary = testbin.New("github.com/voicegateway/voicegateway/cmd/vgload")
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		voiceServer.Remove(code)
		vgloadBinary.Remove(code)
	}))
}
