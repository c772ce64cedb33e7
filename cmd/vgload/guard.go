package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
)

// vgload sends heavy traffic. By default it talks to loopback addresses
// only — checked twice: each URL's host up front, with a clear message, and
// every socket's destination as it connects, so that no name resolution,
// redirect or proxy setting can point it elsewhere. --allow-remote lifts
// both checks for a deliberate run against a test host.

// checkTarget returns an error when rawURL's host is not a loopback address
// and remote targets are not allowed. Host names other than "localhost" are
// refused: what they resolve to is not known here.
func checkTarget(rawURL string, allowRemote bool) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("target %q: %w", rawURL, err)
	}
	switch u.Scheme {
	case "ws", "wss", "http", "https":
	default:
		return fmt.Errorf("target %q: scheme must be ws, wss, http or https", rawURL)
	}
	host := u.Hostname()
	if host == "" {
		return fmt.Errorf("target %q has no host", rawURL)
	}
	if allowRemote {
		return nil
	}
	if strings.EqualFold(host, "localhost") {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.Unmap().IsLoopback() {
		return fmt.Errorf("target %q is not a loopback address; vgload only loads loopback unless --allow-remote is given", rawURL)
	}
	return nil
}

// httpURL turns an admin address given as host:port into a URL.
func httpURL(addr string) string {
	if strings.Contains(addr, "://") {
		return strings.TrimRight(addr, "/")
	}
	return "http://" + addr
}

// guardedDialer returns a dialer whose every connection is checked against
// the loopback rule at the socket level.
func guardedDialer(allowRemote bool) *net.Dialer {
	d := &net.Dialer{}
	if !allowRemote {
		d.ControlContext = loopbackOnly
	}
	return d
}

// loopbackOnly is a net.Dialer control hook refusing non-loopback peers.
func loopbackOnly(_ context.Context, network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("vgload: refusing to connect to %s %q: not an IP address", network, address)
	}
	if !ap.Addr().Unmap().IsLoopback() {
		return fmt.Errorf("vgload: refusing to connect to %s: not a loopback address (use --allow-remote)", address)
	}
	return nil
}
