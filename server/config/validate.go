package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Limits enforced by Validate, exported so that the operator can state and
// check the same bounds.
const (
	MaxClientTokenTTL = 10 * time.Minute
	// MinExitMargin is the least time after the drain deadline the stop
	// sequence is given (server/lifecycle splits it).
	MinExitMargin = time.Second
	// MaxSecretPollInterval bounds how late a server reads a rotated
	// fleet Secret, which the rotation's activation delay must cover.
	MaxSecretPollInterval = time.Minute
	MinMaxMessageBytes    = 1 << 10
	// MaxMaxMessageBytes lets a client send the largest audio chunk the
	// OpenAI Realtime API accepts in one append (15 MiB) with room to spare.
	MaxMaxMessageBytes = 16 << 20
	// The bounds of --openai-max-message-bytes: an upstream event carries
	// at most a few seconds of audio, but a retrieved conversation item or
	// a long session object can be much larger.
	MinOpenAIMessageBytes = 64 << 10
	MaxOpenAIMessageBytes = 64 << 20
	// OpenAISampleRate is the only PCM rate the OpenAI Realtime API carries.
	OpenAISampleRate = 24000
	// MaxOpenAIModels bounds --openai-models: each session checks its
	// client's choice against the list.
	MaxOpenAIModels = 32
	// The bounds of --max-buffered-audio: a second is too short for a
	// turn, and a minute is what used to be fixed (2.9 MB a session).
	MinMaxBufferedAudio = time.Second
	MaxMaxBufferedAudio = time.Minute
	// The bounds of --outbound-queue-bytes.
	MinOutboundQueueBytes = 64 << 10
	MaxOutboundQueueBytes = 64 << 20
	// MaxSessionsPerToken bounds --max-sessions-per-token: a token is a
	// connection ticket, not a pass.
	MaxSessionsPerToken = 1000
	// MinMemoryLimit is the least --memory-limit the server runs with.
	MinMemoryLimit = 32 << 20
)

var (
	allowedBackends   = []string{BackendEcho, BackendOpenAI}
	allowedLogLevels  = []string{"debug", "info", "warn", "error"}
	allowedLogFormats = []string{"json", "console"}
	allowedSampleRate = []int{16000, 24000}
)

// Validate reports every problem with the configuration at once. Each
// message starts with the flag the problem is about and says what to change.
func (c Config) Validate() error {
	var p problems

	listenPort := p.address("listen", c.Listen)
	adminPort := p.address("admin-listen", c.AdminListen)
	if listenPort != "" && adminPort != "" && listenPort == adminPort && listenPort != "0" &&
		sameHost(c.Listen, c.AdminListen) {
		p.add("admin-listen", "%q collides with --listen %q; the admin server needs its own port so it can stay off the public Service",
			c.AdminListen, c.Listen)
	}
	if !slices.Contains(allowedBackends, c.Backend) {
		p.add("backend", "unknown backend %q; choose one of %s", c.Backend, strings.Join(allowedBackends, ", "))
	}

	switch {
	case c.APIKeysFile != "" && c.InsecureNoAuth:
		p.add("insecure-no-auth", "cannot be combined with --api-keys-file; drop one of them")
	case c.APIKeysFile == "" && !c.InsecureNoAuth:
		p.add("api-keys-file", "is required: name a file of API keys, or pass --insecure-no-auth to run without authentication (development only)")
	}
	p.positive("client-token-ttl", c.ClientTokenTTL)
	if c.ClientTokenTTL > MaxClientTokenTTL {
		p.add("client-token-ttl", "%s is longer than the maximum %s; a leaked token must expire soon",
			formatDuration(c.ClientTokenTTL), formatDuration(MaxClientTokenTTL))
	}
	if c.SecretPollInterval < 100*time.Millisecond || c.SecretPollInterval > MaxSecretPollInterval {
		p.add("secret-poll-interval", "%s is out of range; use 100ms to %s (the default is 10s): a key rotation's activation delay counts on it",
			formatDuration(c.SecretPollInterval), formatDuration(MaxSecretPollInterval))
	}
	if !slices.Contains(allowedLogFormats, c.LogFormat) {
		p.add("log-format", "unknown format %q; choose one of %s", c.LogFormat, strings.Join(allowedLogFormats, ", "))
	}
	if !slices.Contains(allowedLogLevels, c.LogLevel) {
		p.add("log-level", "unknown level %q; choose one of %s", c.LogLevel, strings.Join(allowedLogLevels, ", "))
	}

	s := c.Sessions
	p.atLeast("session-limit", s.Limit, 1)
	if s.MaxMessageBytes < MinMaxMessageBytes || s.MaxMessageBytes > MaxMaxMessageBytes {
		p.add("max-message-bytes", "%d is out of range; use %d (1 KiB) to %d (16 MiB)",
			s.MaxMessageBytes, MinMaxMessageBytes, MaxMaxMessageBytes)
	}
	if !(s.InboundRate > 0) {
		p.add("inbound-rate", "must be more than 0 messages per second, got %v", s.InboundRate)
	}
	p.atLeast("inbound-burst", s.InboundBurst, 1)
	p.atLeast("outbound-queue", s.OutboundQueue, 1)
	p.positive("idle-timeout", s.IdleTimeout)
	p.positive("max-duration", s.MaxDuration)
	p.positive("write-timeout", s.WriteTimeout)
	if !slices.Contains(allowedSampleRate, s.SampleRate) {
		p.add("sample-rate", "%d Hz is not supported; use 16000 or 24000", s.SampleRate)
	}
	if s.OutboundQueueBytes < MinOutboundQueueBytes || s.OutboundQueueBytes > MaxOutboundQueueBytes {
		p.add("outbound-queue-bytes", "%s is out of range; use 64Ki to 64Mi", FormatBytes(s.OutboundQueueBytes))
	}
	if s.MaxBufferedAudio < MinMaxBufferedAudio || s.MaxBufferedAudio > MaxMaxBufferedAudio {
		p.add("max-buffered-audio", "%s is out of range; use %s to %s (the default is 10s)",
			formatDuration(s.MaxBufferedAudio), formatDuration(MinMaxBufferedAudio), formatDuration(MaxMaxBufferedAudio))
	}
	if s.MaxPerToken < 1 || s.MaxPerToken > MaxSessionsPerToken {
		p.add("max-sessions-per-token", "%d is out of range; use 1 (a token opens one session, the default) to %d", s.MaxPerToken, MaxSessionsPerToken)
	}
	if s.MaxPerAPIKey < 0 {
		p.add("max-sessions-per-key", "must not be negative (0 means no cap), got %d", s.MaxPerAPIKey)
	}
	if s.MaxPerClientIP < 0 {
		p.add("max-sessions-per-ip", "must not be negative (0 means no cap), got %d", s.MaxPerClientIP)
	}
	p.atLeast("max-handshakes", s.MaxHandshakes, 1)
	if c.MemoryLimit != 0 && c.MemoryLimit < MinMemoryLimit {
		p.add("memory-limit", "%s is too small; give the container at least %s, or 0 to run without a budget",
			FormatBytes(c.MemoryLimit), FormatBytes(MinMemoryLimit))
	}

	r := c.RateLimit
	p.positive("auth-fail-window", r.Window)
	p.positive("auth-block-duration", r.BlockDuration)
	p.nonNegative("auth-suspicious-delay", r.SuspiciousDelay)
	p.positive("auth-cleanup-interval", r.CleanupInterval)
	p.atLeast("auth-suspicious-after", r.SuspiciousAfter, 1)
	if r.BlockAfter <= r.SuspiciousAfter {
		p.add("auth-block-after", "%d must be more than --auth-suspicious-after %d: a client is slowed down before it is blocked",
			r.BlockAfter, r.SuspiciousAfter)
	}
	p.atLeast("auth-max-tracked", r.MaxTracked, 1)
	for _, entry := range r.TrustedProxies {
		if _, err := parseProxy(entry); err != nil {
			p.add("trusted-proxies", "%v", err)
		}
	}

	cl := c.Cluster
	if cl.Listen != "" {
		p.address("cluster-listen", cl.Listen)
		if c.FleetSecretDir == "" {
			p.add("cluster-listen", "needs --fleet-secret-dir: gossip is encrypted with the fleet Secret's fleet-key and never sent in the clear")
		}
		if cl.Advertise != "" {
			p.address("cluster-advertise", cl.Advertise)
		}
	} else if len(cl.Peers) > 0 || cl.Advertise != "" || cl.PeersFile != "" {
		p.add("cluster-listen", "is required with --cluster-peers, --cluster-peers-file or --cluster-advertise: name the gossip address, e.g. :7946")
	}
	p.positive("cluster-settle-timeout", cl.SettleTimeout)

	d := c.Drain
	p.positive("drain-timeout", d.Timeout)
	p.nonNegative("propagation-delay", d.PropagationDelay)
	p.nonNegative("notify-window", d.NotifyWindow)
	p.nonNegative("reconnect-after", d.ReconnectAfter)
	if d.ExitMargin < MinExitMargin {
		p.add("exit-margin", "%s is too short; closing the sessions left, the listeners and the logs needs at least %s",
			formatDuration(d.ExitMargin), formatDuration(MinExitMargin))
	}
	if d.Timeout > 0 && d.PropagationDelay+d.NotifyWindow >= d.Timeout {
		p.add("notify-window", "--propagation-delay %s + --notify-window %s = %s must be less than --drain-timeout %s; shorten them or raise --drain-timeout",
			formatDuration(d.PropagationDelay), formatDuration(d.NotifyWindow),
			formatDuration(d.PropagationDelay+d.NotifyWindow), formatDuration(d.Timeout))
	}

	o := c.OpenAI
	switch u, err := url.Parse(o.URL); {
	case err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "":
		p.add("openai-url", "%q is not a ws:// or wss:// URL such as %s", RedactURL(o.URL), DefaultOpenAIURL)
	case u.User != nil:
		// The URL is logged and shown in /debug/pprof/cmdline; a key in it
		// would be too.
		p.add("openai-url", "%q holds credentials (user:password@); put the upstream key in the file --openai-api-key-file names", RedactURL(o.URL))
	}
	p.positive("openai-key-poll-interval", o.KeyPollInterval)
	p.positive("openai-dial-timeout", o.DialTimeout)
	p.positive("openai-stall-timeout", o.StallTimeout)
	if o.MaxMessageBytes < MinOpenAIMessageBytes || o.MaxMessageBytes > MaxOpenAIMessageBytes {
		p.add("openai-max-message-bytes", "%d is out of range; use %d (64 KiB) to %d (64 MiB)",
			o.MaxMessageBytes, MinOpenAIMessageBytes, MaxOpenAIMessageBytes)
	}
	if len(o.Models) > MaxOpenAIModels {
		p.add("openai-models", "%d models listed; at most %d", len(o.Models), MaxOpenAIModels)
	}
	for _, m := range o.Models {
		if !isModelName(m) {
			p.add("openai-models", "%q is not a model name (letters, digits and . _ : -, at most 64 bytes)", m)
			break
		}
	}
	if c.Backend == BackendOpenAI {
		if o.APIKeyFile == "" {
			p.add("openai-api-key-file", "is required with --backend openai: name the file holding the upstream API key")
		}
		if s.SampleRate != OpenAISampleRate {
			p.add("sample-rate", "%d Hz cannot be used with --backend openai, which carries PCM16 at %d Hz only", s.SampleRate, OpenAISampleRate)
		}
	}

	return errors.Join(p...)
}

// TrustedProxyPrefixes returns TrustedProxies as prefixes; a bare address
// becomes a prefix holding only itself. Validate has already rejected any
// entry that makes this fail.
func (r RateLimitConfig) TrustedProxyPrefixes() ([]netip.Prefix, error) {
	prefixes := make([]netip.Prefix, 0, len(r.TrustedProxies))
	for _, entry := range r.TrustedProxies {
		prefix, err := parseProxy(entry)
		if err != nil {
			return nil, err
		}
		prefixes = append(prefixes, prefix)
	}
	return prefixes, nil
}

func parseProxy(entry string) (netip.Prefix, error) {
	if strings.Contains(entry, "/") {
		prefix, err := netip.ParsePrefix(entry)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR prefix such as 10.0.0.0/8: %w", entry, err)
		}
		return prefix.Masked(), nil
	}
	addr, err := netip.ParseAddr(entry)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR prefix: %w", entry, err)
	}
	return netip.PrefixFrom(addr, addr.BitLen()), nil
}

// problems collects validation errors, each prefixed by its flag.
type problems []error

func (p *problems) add(flagName, format string, args ...any) {
	*p = append(*p, fmt.Errorf("--"+flagName+": "+format, args...))
}

func (p *problems) positive(flagName string, d time.Duration) {
	if d <= 0 {
		p.add(flagName, "must be longer than 0, got %s", formatDuration(d))
	}
}

func (p *problems) nonNegative(flagName string, d time.Duration) {
	if d < 0 {
		p.add(flagName, "must not be negative, got %s", formatDuration(d))
	}
}

func (p *problems) atLeast(flagName string, n, least int) {
	if n < least {
		p.add(flagName, "must be at least %d, got %d", least, n)
	}
}

// address checks a listen address and returns its port, or "" when the
// address is malformed.
func (p *problems) address(flagName, addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		p.add(flagName, "%q is not host:port, e.g. \":8080\": %v", addr, err)
		return ""
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		p.add(flagName, "%q has port %q; use a number from 0 to 65535", addr, port)
		return ""
	}
	return port
}

// sameHost reports whether two listen addresses with the same port would
// compete for it: the same host, or either one listening on every interface.
func sameHost(a, b string) bool {
	hostA, _, _ := net.SplitHostPort(a)
	hostB, _, _ := net.SplitHostPort(b)
	return hostA == hostB || isWildcard(hostA) || isWildcard(hostB)
}

func isWildcard(host string) bool {
	if host == "" {
		return true
	}
	addr, err := netip.ParseAddr(host)
	return err == nil && addr.IsUnspecified()
}

// isModelName reports whether s may be a model in --openai-models: what a
// client token's model claim may hold (letters, digits and . _ : -, 1 to 64
// bytes), so that every allowed model can also be claimed.
func isModelName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '.', c == '_', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

// AllowedModels is the openai backend's allowlist: --openai-models, or
// --openai-model alone when that is empty.
func (o OpenAIConfig) AllowedModels() []string {
	if len(o.Models) > 0 {
		return o.Models
	}
	if o.Model != "" {
		return []string{o.Model}
	}
	return nil
}
