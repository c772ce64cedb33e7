package clientip

import (
	"net/http"
	"strings"
	"testing"
)

// FuzzFromRequest checks that no RemoteAddr or X-Forwarded-For can make
// FromRequest panic or return an address the request never named: the
// answer is always the peer or one of the header's entries.
func FuzzFromRequest(f *testing.F) {
	seeds := []struct{ remoteAddr, xff string }{
		{"203.0.113.7:52100", ""},
		{"10.1.2.3:80", "198.51.100.1"},
		{"10.1.2.3:80", "1.1.1.1, 198.51.100.1, 10.9.9.9"},
		{"10.1.2.3:80", "6.6.6.6, _hidden, 10.0.0.1"},
		{"10.1.2.3:80", "198.51.100.1:52100, [fd00::1]:443"},
		{"[fd00::10]:443", "2001:db8::42, fd00::11"},
		{"[::ffff:10.1.2.3]:80", "::ffff:198.51.100.1"},
		{"[fe80::1%eth0]:443", "fe80::2%lo"},
		{"10.1.2.3:80", "a\nb, 10.0.0.1\n198.51.100.1"},
		{"10.1.2.3:80", " , ,,"},
		{"@", "198.51.100.1"},
		{"", ""},
	}
	for _, s := range seeds {
		f.Add(s.remoteAddr, s.xff)
	}
	f.Fuzz(func(t *testing.T, remoteAddr, xff string) {
		r := &http.Request{RemoteAddr: remoteAddr, Header: http.Header{}}
		// A newline in the fuzzed text starts another header line, so
		// multi-line headers are exercised too.
		lines := strings.Split(xff, "\n")
		if xff != "" {
			r.Header[forwardedForKey] = lines
		}

		got := FromRequest(r, testTrusted)

		peer, ok := parsePeer(remoteAddr)
		if !ok {
			if got.IsValid() {
				t.Fatalf("unparsable RemoteAddr %q gave %v, want the zero Addr", remoteAddr, got)
			}
			return
		}
		if !got.IsValid() {
			t.Fatalf("parsable RemoteAddr %q gave the zero Addr", remoteAddr)
		}
		if got == peer {
			return
		}
		if !isTrusted(peer, testTrusted) {
			t.Fatalf("untrusted peer %v: header was believed and gave %v", peer, got)
		}
		for _, line := range lines {
			for _, entry := range strings.Split(line, ",") {
				if addr, ok := parseEntry(strings.TrimSpace(entry)); ok && addr == got {
					return
				}
			}
		}
		t.Fatalf("FromRequest(%q, %q) = %v: neither the peer %v nor in the header", remoteAddr, xff, got, peer)
	})
}
