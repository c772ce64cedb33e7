package main

import (
	"errors"
	"testing"

	"github.com/coder/websocket"

	"github.com/voicegateway/voicegateway/internal/voiceclient"
)

func TestEndKind(t *testing.T) {
	boom := errors.New("boom")
	tests := map[string]struct {
		end     voiceclient.End
		aborted bool // the run cut the session
		want    string
		retry   bool
	}{
		"our close, handshake done":   {end: voiceclient.End{Code: websocket.StatusNormalClosure, ByClient: true}, want: "client 1000"},
		"our close, cut":              {end: voiceclient.End{Code: -1, ByClient: true, Err: boom}, want: "client 1000"},
		"server hung up":              {end: voiceclient.End{Code: websocket.StatusNormalClosure}, want: "server 1000"},
		"drain deadline":              {end: voiceclient.End{Code: websocket.StatusServiceRestart}, want: "server 1012", retry: true},
		"session limit":               {end: voiceclient.End{Code: websocket.StatusTryAgainLater}, want: "server 1013", retry: true},
		"policy (slow consumer)":      {end: voiceclient.End{Code: websocket.StatusPolicyViolation}, want: "server 1008"},
		"server error after we close": {end: voiceclient.End{Code: websocket.StatusInternalError, ByClient: true}, want: "server 1011"},
		"connection lost":             {end: voiceclient.End{Code: -1, Err: boom}, want: "lost 1006", retry: true},
		"hung up without a handshake": {end: voiceclient.End{Code: -1, Cut: true, Err: boom}, want: "lost 1006", retry: true},
		"cut by the run":              {end: voiceclient.End{Code: -1, Cut: true, Err: boom}, aborted: true, want: "aborted"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := endKind(tc.end, tc.aborted)
			if got != tc.want || retryable(got) != tc.retry {
				t.Fatalf("endKind = %q (retry %v), want %q (retry %v)", got, retryable(got), tc.want, tc.retry)
			}
		})
	}
}
