package clientip

import (
	"net/http"
	"testing"
)

func BenchmarkFromRequest(b *testing.B) {
	cases := []struct {
		name       string
		remoteAddr string
		xff        string
	}{
		{name: "direct", remoteAddr: "203.0.113.7:52100"},
		{name: "behind_two_proxies", remoteAddr: "10.1.2.3:80", xff: "6.6.6.6, 198.51.100.1, 10.9.9.9"},
		{name: "ipv6_behind_proxy", remoteAddr: "[fd00::10]:443", xff: "2001:db8::42, fd00::11"},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			r := &http.Request{RemoteAddr: c.remoteAddr, Header: http.Header{}}
			if c.xff != "" {
				r.Header.Set("X-Forwarded-For", c.xff)
			}
			b.ReportAllocs()
			for b.Loop() {
				FromRequest(r, testTrusted)
			}
		})
	}
}
