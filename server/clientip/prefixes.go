package clientip

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// ParsePrefixes parses a trusted-proxy list as it comes from configuration.
// Each entry is a CIDR prefix ("10.0.0.0/8", "fd00::/8") or a bare address,
// which trusts exactly that address (/32 or /128). Surrounding spaces are
// ignored and empty entries skipped, so "a, b," works as written.
//
// Prefixes are masked, and IPv4-mapped IPv6 prefixes ("::ffff:10.0.0.0/104")
// are turned into the IPv4 prefix they mean, because FromRequest compares
// against unmapped addresses.
//
// The error names the first bad entry by position and text.
func ParsePrefixes(list []string) ([]netip.Prefix, error) {
	prefixes := make([]netip.Prefix, 0, len(list))
	for i, raw := range list {
		entry := strings.TrimSpace(raw)
		if entry == "" {
			continue
		}
		p, err := parsePrefix(entry)
		if err != nil {
			return nil, fmt.Errorf("trusted proxy entry %d (%q): %w", i+1, raw, err)
		}
		prefixes = append(prefixes, p)
	}
	return prefixes, nil
}

func parsePrefix(entry string) (netip.Prefix, error) {
	if strings.Contains(entry, "%") {
		return netip.Prefix{}, errors.New("IPv6 zones are not supported; remove the %zone part")
	}
	if !strings.Contains(entry, "/") {
		addr, err := netip.ParseAddr(entry)
		if err != nil {
			return netip.Prefix{}, errors.New("not an IP address or CIDR prefix (want e.g. 10.0.0.1 or 10.0.0.0/8)")
		}
		addr = addr.Unmap()
		return netip.PrefixFrom(addr, addr.BitLen()), nil
	}
	p, err := netip.ParsePrefix(entry)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("not a valid CIDR prefix (want e.g. 10.0.0.0/8 or fd00::/8): %w", err)
	}
	if addr := p.Addr(); addr.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(addr.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}
