package main

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/voicegateway/voicegateway/internal/testbin"
)

// voiceServer is the real server the end-to-end tests load.
var voiceServer = testbin.New("github.com/voicegateway/voicegateway/cmd/voice-server")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(voiceServer.Remove))
}
