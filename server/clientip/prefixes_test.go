package clientip

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestParsePrefixes(t *testing.T) {
	tests := []struct {
		name    string
		list    []string
		want    []string // canonical prefixes
		wantErr string   // substring of the error; "" means no error
	}{
		{name: "nil list", list: nil, want: []string{}},
		{name: "IPv4 CIDR", list: []string{"10.0.0.0/8"}, want: []string{"10.0.0.0/8"}},
		{name: "IPv6 CIDR", list: []string{"fd00::/8"}, want: []string{"fd00::/8"}},
		{name: "bare IPv4 is /32", list: []string{"192.0.2.1"}, want: []string{"192.0.2.1/32"}},
		{name: "bare IPv6 is /128", list: []string{"2001:db8::1"}, want: []string{"2001:db8::1/128"}},
		{name: "host bits are masked", list: []string{"10.1.2.3/8"}, want: []string{"10.0.0.0/8"}},
		{name: "mapped bare address is unmapped", list: []string{"::ffff:10.0.0.1"}, want: []string{"10.0.0.1/32"}},
		{name: "mapped prefix becomes IPv4", list: []string{"::ffff:10.0.0.0/104"}, want: []string{"10.0.0.0/8"}},
		{name: "spaces and empty entries", list: []string{" 10.0.0.0/8 ", "", "  ", "::1"}, want: []string{"10.0.0.0/8", "::1/128"}},
		{name: "garbage names the entry", list: []string{"10.0.0.0/8", "proxy.local"}, wantErr: `entry 2 ("proxy.local")`},
		{name: "bad prefix length", list: []string{"10.0.0.0/33"}, wantErr: `entry 1 ("10.0.0.0/33"): not a valid CIDR prefix`},
		{name: "zone rejected", list: []string{"fe80::1%eth0"}, wantErr: "zones are not supported"},
		{name: "port rejected", list: []string{"10.0.0.1:80"}, wantErr: `entry 1 ("10.0.0.1:80")`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePrefixes(tt.list)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParsePrefixes(%q) error = %v, want it to contain %q", tt.list, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePrefixes(%q) unexpected error: %v", tt.list, err)
			}
			gotText := make([]string, 0, len(got))
			for _, p := range got {
				gotText = append(gotText, p.String())
			}
			if !slices.Equal(gotText, tt.want) {
				t.Errorf("ParsePrefixes(%q) = %q, want %q", tt.list, gotText, tt.want)
			}
		})
	}
}

func TestParsePrefixesMatchesUnmappedPeers(t *testing.T) {
	p, err := ParsePrefixes([]string{"::ffff:10.0.0.0/104"})
	if err != nil {
		t.Fatal(err)
	}
	if !isTrusted(netip.MustParseAddr("10.2.3.4"), p) {
		t.Errorf("10.2.3.4 should be trusted by %v", p)
	}
}
