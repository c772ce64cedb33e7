package clientip

import (
	"net/http"
	"net/netip"
	"testing"
)

// testTrusted is a typical deployment: a cluster network, loopback and an
// IPv6 ULA range for the ingress proxies.
var testTrusted = mustPrefixes("10.0.0.0/8", "127.0.0.1", "fd00::/8", "::1")

func mustPrefixes(list ...string) []netip.Prefix {
	p, err := ParsePrefixes(list)
	if err != nil {
		panic(err)
	}
	return p
}

func TestFromRequest(t *testing.T) {
	tests := []struct {
		name       string
		remoteAddr string
		xff        []string // one element per X-Forwarded-For header line
		trusted    []netip.Prefix
		want       string // "" means the zero Addr
	}{
		{
			name:       "direct IPv4 client, no header",
			remoteAddr: "203.0.113.7:52100",
			want:       "203.0.113.7",
		},
		{
			name:       "direct client cannot spoof: header ignored from untrusted peer",
			remoteAddr: "203.0.113.7:52100",
			xff:        []string{"198.51.100.1"},
			want:       "203.0.113.7",
		},
		{
			name:       "no trusted proxies configured: header ignored",
			remoteAddr: "10.1.2.3:80",
			xff:        []string{"198.51.100.1"},
			trusted:    []netip.Prefix{},
			want:       "10.1.2.3",
		},
		{
			name:       "one trusted proxy",
			remoteAddr: "10.1.2.3:80",
			xff:        []string{"198.51.100.1"},
			want:       "198.51.100.1",
		},
		{
			name:       "spoofed left-most entry is not believed",
			remoteAddr: "10.1.2.3:80",
			xff:        []string{"1.1.1.1, 198.51.100.1"},
			want:       "198.51.100.1",
		},
		{
			name:       "chain of trusted proxies is skipped",
			remoteAddr: "10.1.2.3:80",
			xff:        []string{"6.6.6.6, 198.51.100.1, 10.9.9.9, 127.0.0.1"},
			want:       "198.51.100.1",
		},
		{
			name:       "client claims a trusted address on the left: still the first untrusted from the right",
			remoteAddr: "10.1.2.3:80",
			xff:        []string{"10.0.0.1, 198.51.100.1, 10.9.9.9"},
			want:       "198.51.100.1",
		},
		{
			name:       "header split over several lines is one list",
			remoteAddr: "10.1.2.3:80",
			xff:        []string{"6.6.6.6, 198.51.100.1", "10.9.9.9"},
			want:       "198.51.100.1",
		},
		{
			name:       "later header line is nearer to us",
			remoteAddr: "10.1.2.3:80",
			xff:        []string{"6.6.6.6", "198.51.100.1"},
			want:       "198.51.100.1",
		},
		{
			name:       "every entry trusted: left-most trusted hop",
			remoteAddr: "10.1.2.3:80",
			xff:        []string{"10.0.0.5, 10.0.0.6"},
			want:       "10.0.0.5",
		},
		{
			name:       "trusted peer with empty header",
			remoteAddr: "10.1.2.3:80",
			xff:        []string{""},
			want:       "10.1.2.3",
		},
		{
			name:       "empty list elements are ignored",
			remoteAddr: "10.1.2.3:80",
			xff:        []string{" , 198.51.100.1 ,, "},
			want:       "198.51.100.1",
		},
		{
			name:       "garbage right after our proxy: peer is used",
			remoteAddr: "10.1.2.3:80",
			xff:        []string{"198.51.100.1, not-an-ip"},
			want:       "10.1.2.3",
		},
		{
			name:       "garbage stops the walk at the nearest trusted hop",
			remoteAddr: "10.1.2.3:80",
			xff:        []string{"198.51.100.1, unknown, 10.9.9.9"},
			want:       "10.9.9.9",
		},
		{
			name:       "garbage hides a spoofed address on its left",
			remoteAddr: "10.1.2.3:80",
			xff:        []string{"6.6.6.6, _hidden"},
			want:       "10.1.2.3",
		},
		{
			name:       "header injection with semicolons is garbage",
			remoteAddr: "10.1.2.3:80",
			xff:        []string{"for=6.6.6.6;proto=https"},
			want:       "10.1.2.3",
		},
		{
			name:       "entries with ports",
			remoteAddr: "10.1.2.3:80",
			xff:        []string{"198.51.100.1:52100, [fd00::1]:443"},
			want:       "198.51.100.1",
		},
		{
			name:       "bracketed IPv6 entry without port",
			remoteAddr: "10.1.2.3:80",
			xff:        []string{"[2001:db8::7]"},
			want:       "2001:db8::7",
		},
		{
			name:       "IPv6 peer",
			remoteAddr: "[2001:db8::1]:443",
			want:       "2001:db8::1",
		},
		{
			name:       "IPv6 peer with zone",
			remoteAddr: "[fe80::1%eth0]:443",
			want:       "fe80::1",
		},
		{
			name:       "trusted IPv6 proxy, IPv6 client",
			remoteAddr: "[fd00::10]:443",
			xff:        []string{"2001:db8::42, fd00::11"},
			want:       "2001:db8::42",
		},
		{
			name:       "trusted IPv6 loopback proxy, IPv4 client",
			remoteAddr: "[::1]:8080",
			xff:        []string{"198.51.100.1"},
			want:       "198.51.100.1",
		},
		{
			name:       "IPv4-mapped peer is unmapped and matched against IPv4 prefixes",
			remoteAddr: "[::ffff:10.1.2.3]:80",
			xff:        []string{"198.51.100.1"},
			want:       "198.51.100.1",
		},
		{
			name:       "IPv4-mapped untrusted peer is unmapped",
			remoteAddr: "[::ffff:203.0.113.7]:80",
			want:       "203.0.113.7",
		},
		{
			name:       "IPv4-mapped entry is unmapped and may be trusted",
			remoteAddr: "10.1.2.3:80",
			xff:        []string{"198.51.100.1, ::ffff:10.9.9.9"},
			want:       "198.51.100.1",
		},
		{
			name:       "IPv4-mapped client entry is unmapped",
			remoteAddr: "10.1.2.3:80",
			xff:        []string{"::ffff:198.51.100.1"},
			want:       "198.51.100.1",
		},
		{
			name:       "bare RemoteAddr without port",
			remoteAddr: "203.0.113.7",
			want:       "203.0.113.7",
		},
		{
			name:       "bare bracketed IPv6 RemoteAddr",
			remoteAddr: "[2001:db8::1]",
			want:       "2001:db8::1",
		},
		{
			name:       "unparsable RemoteAddr gives the zero Addr",
			remoteAddr: "@",
			xff:        []string{"198.51.100.1"},
			want:       "",
		},
		{
			name:       "empty RemoteAddr gives the zero Addr",
			remoteAddr: "",
			want:       "",
		},
		{
			name:       "hostname RemoteAddr gives the zero Addr",
			remoteAddr: "localhost:80",
			want:       "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &http.Request{RemoteAddr: tt.remoteAddr, Header: http.Header{}}
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			trusted := testTrusted
			if tt.trusted != nil {
				trusted = tt.trusted
			}
			got := FromRequest(r, trusted)
			var want netip.Addr
			if tt.want != "" {
				want = netip.MustParseAddr(tt.want)
			}
			if got != want {
				t.Errorf("FromRequest(RemoteAddr=%q, XFF=%q) = %v, want %v", tt.remoteAddr, tt.xff, got, want)
			}
		})
	}
}

// TestFromRequestNilHeader guards handlers that build requests by hand.
func TestFromRequestNilHeader(t *testing.T) {
	r := &http.Request{RemoteAddr: "10.1.2.3:80"}
	if got, want := FromRequest(r, testTrusted), netip.MustParseAddr("10.1.2.3"); got != want {
		t.Errorf("FromRequest = %v, want %v", got, want)
	}
}
