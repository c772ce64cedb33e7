package main

import (
	"context"
	"net"
	"strings"
	"testing"
)

func TestCheckTarget(t *testing.T) {
	tests := map[string]struct {
		url         string
		allowRemote bool
		wantErr     string // empty: allowed
	}{
		"IPv4 loopback":              {url: "ws://127.0.0.1:8080/v1/realtime"},
		"anywhere in 127/8":          {url: "ws://127.3.2.1:8080/"},
		"IPv6 loopback":              {url: "ws://[::1]:8080/v1/realtime"},
		"localhost":                  {url: "http://localhost:9090"},
		"IPv4-mapped loopback":       {url: "ws://[::ffff:127.0.0.1]:8080/"},
		"private address":            {url: "ws://10.0.0.5:8080/", wantErr: "not a loopback address"},
		"public address":             {url: "wss://203.0.113.7/v1/realtime", wantErr: "not a loopback address"},
		"host name":                  {url: "ws://gateway.example:8080/", wantErr: "not a loopback address"},
		"unspecified address":        {url: "ws://0.0.0.0:8080/", wantErr: "not a loopback address"},
		"remote, allowed explicitly": {url: "ws://10.0.0.5:8080/", allowRemote: true},
		"other scheme":               {url: "ftp://127.0.0.1/", wantErr: "scheme"},
		"no host":                    {url: "ws:///v1/realtime", wantErr: "no host"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := checkTarget(tc.url, tc.allowRemote)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("checkTarget(%q) = %v, want allowed", tc.url, err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("checkTarget(%q) = %v, want an error containing %q", tc.url, err, tc.wantErr)
			}
		})
	}
}

func TestLoopbackOnlyDialGuard(t *testing.T) {
	tests := map[string]struct {
		address string
		allowed bool
	}{
		"loopback v4":   {address: "127.0.0.1:80", allowed: true},
		"loopback v6":   {address: "[::1]:80", allowed: true},
		"private v4":    {address: "192.168.1.1:80"},
		"documentation": {address: "[2001:db8::1]:443"},
		"not an IP":     {address: "example.com:80"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := loopbackOnly(context.Background(), "tcp", tc.address, nil)
			if (err == nil) != tc.allowed {
				t.Fatalf("loopbackOnly(%s) = %v, allowed want %v", tc.address, err, tc.allowed)
			}
		})
	}
}

// The guard holds at the socket: a dial to a non-loopback address fails
// before any packet is sent.
func TestGuardedDialerRefusesRemote(t *testing.T) {
	_, err := guardedDialer(false).DialContext(context.Background(), "tcp", "192.0.2.1:9")
	if err == nil || !strings.Contains(err.Error(), "not a loopback address") {
		t.Fatalf("dial to 192.0.2.1 = %v, want refused by the guard", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := guardedDialer(false).DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial to loopback: %v", err)
	}
	c.Close()
}
