// Package clientip decides which IP address a request is charged to when
// failed authentication is rate limited.
//
// Behind a load balancer every connection comes from the balancer, so the
// client has to be taken from X-Forwarded-For. That header is written by
// whoever sends the request, so only the part appended by proxies we run
// can be believed: the list is read from the right, past our own proxies,
// and the first address that is not one of them is the client. Taking the
// left-most entry instead would let any client pick the address it is
// blamed under and so walk around every block.
package clientip

import (
	"net/http"
	"net/netip"
	"strings"
)

// forwardedForKey is X-Forwarded-For in canonical form, so the header map
// can be read directly without canonicalising the name on every request.
const forwardedForKey = "X-Forwarded-For"

// FromRequest returns the address of the client that sent r.
//
// The peer comes from r.RemoteAddr. Only when the peer lies inside one of
// the trusted proxy prefixes is X-Forwarded-For consulted: all of its
// header lines, in order, as one comma-separated list, read from right to
// left. Addresses inside trusted prefixes are skipped and the first one
// outside them is returned. An entry that is not an address stops the
// walk, and the last address read before it (the nearest trusted hop, or
// the peer) is returned, because everything left of a broken entry may have
// been written by the client. If every entry is trusted, the left-most one
// is returned.
//
// IPv4-mapped IPv6 addresses are returned as IPv4 and zones are dropped, so
// one client always yields the same address however it reached us.
//
// The zero Addr is returned only when r.RemoteAddr cannot be parsed (for
// example a Unix socket peer); callers decide how to charge such requests.
func FromRequest(r *http.Request, trusted []netip.Prefix) netip.Addr {
	peer, ok := parsePeer(r.RemoteAddr)
	if !ok {
		return netip.Addr{}
	}
	if !isTrusted(peer, trusted) {
		return peer
	}

	client := peer
	values := r.Header[forwardedForKey]
	for i := len(values) - 1; i >= 0; i-- {
		rest := values[i]
		for {
			entry := rest
			comma := strings.LastIndexByte(rest, ',')
			if comma >= 0 {
				entry, rest = rest[comma+1:], rest[:comma]
			}
			entry = strings.TrimSpace(entry)
			// RFC 9110 §5.6.1 asks recipients to ignore empty list
			// elements; they carry no address, so skipping them gives
			// the client nothing.
			if entry != "" {
				addr, ok := parseEntry(entry)
				if !ok {
					return client
				}
				client = addr
				if !isTrusted(addr, trusted) {
					return addr
				}
			}
			if comma < 0 {
				break
			}
		}
	}
	return client
}

// parsePeer reads r.RemoteAddr. net/http always sets host:port, but
// handlers under test or behind other servers may see a bare address, so
// those forms are accepted too.
func parsePeer(remoteAddr string) (netip.Addr, bool) {
	if ap, err := netip.ParseAddrPort(remoteAddr); err == nil {
		return normalise(ap.Addr()), true
	}
	return parseBare(remoteAddr)
}

// parseEntry reads one X-Forwarded-For element. Some proxies append the
// client port ("203.0.113.7:52100", "[2001:db8::1]:443"), so that form is
// accepted as well as the plain address.
func parseEntry(entry string) (netip.Addr, bool) {
	if addr, ok := parseBare(entry); ok {
		return addr, true
	}
	if ap, err := netip.ParseAddrPort(entry); err == nil {
		return normalise(ap.Addr()), true
	}
	return netip.Addr{}, false
}

// parseBare parses an address with or without IPv6 brackets.
func parseBare(s string) (netip.Addr, bool) {
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		s = s[1 : len(s)-1]
	}
	addr, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	return normalise(addr), true
}

// normalise maps one client to one address: ::ffff:192.0.2.1 and
// 192.0.2.1 are the same client, and a zone names our interface, not the
// client. netip.Prefix.Contains also never matches a zoned address.
func normalise(addr netip.Addr) netip.Addr {
	return addr.Unmap().WithZone("")
}

func isTrusted(addr netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}
