package config

import (
	"flag"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// setting names one field of Config in every form a user meets it: the
// flag, the environment variable derived from it and the YAML key.
type setting struct {
	flag  string // without dashes
	key   string // dotted path in the YAML file, matching the json tags
	arg   string // placeholder in the usage text; empty uses the kind's name
	usage string
	bind  func(*Config) value
}

func (s setting) envName() string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(s.flag, "-", "_"))
}

// settings is the single list of everything configurable. Its order is the
// order of the usage text.
var settings = []setting{
	{flag: "listen", key: "listen", arg: "host:port",
		usage: "address of the public WebSocket and HTTP server",
		bind:  func(c *Config) value { return stringVar(&c.Listen) }},
	{flag: "admin-listen", key: "admin_listen", arg: "host:port",
		usage: "address of health, readiness, status, metrics and drain; keep it off the public Service",
		bind:  func(c *Config) value { return stringVar(&c.AdminListen) }},
	{flag: "backend", key: "backend", arg: "name",
		usage: "speech backend: echo (built in, needs no network) or openai",
		bind:  func(c *Config) value { return stringVar(&c.Backend) }},
	{flag: "api-keys-file", key: "api_keys_file", arg: "path",
		usage: "file of API keys that clients present; required unless --insecure-no-auth",
		bind:  func(c *Config) value { return stringVar(&c.APIKeysFile) }},
	{flag: "insecure-no-auth", key: "insecure_no_auth",
		usage: "accept every client without credentials; for local development only",
		bind:  func(c *Config) value { return boolVar(&c.InsecureNoAuth) }},
	{flag: "fleet-secret-dir", key: "fleet_secret_dir", arg: "path",
		usage: "directory of the mounted fleet Secret: client-token signing keys shared by every replica and the admin token (docs/operations.md); without it tokens work only on this process and the admin endpoints that need the token are off",
		bind:  func(c *Config) value { return stringVar(&c.FleetSecretDir) }},
	{flag: "client-token-ttl", key: "client_token_ttl",
		usage: "lifetime of an ephemeral client token, at most 10m",
		bind:  func(c *Config) value { return durationVar(&c.ClientTokenTTL) }},
	{flag: "allow-api-key-in-browser", key: "allow_api_key_in_browser",
		usage: "accept a long-lived API key in the openai-insecure-api-key.<key> subprotocol (where browsers show it to anyone who opens devtools); off, only client tokens are accepted there",
		bind:  func(c *Config) value { return boolVar(&c.AllowAPIKeyInBrowser) }},
	{flag: "secret-poll-interval", key: "secret_poll_interval",
		usage: "how often the API key file and the fleet Secret's files are read again, so that a rotated Secret takes effect without a restart",
		bind:  func(c *Config) value { return durationVar(&c.SecretPollInterval) }},
	{flag: "debug-endpoints", key: "debug_endpoints",
		usage: "serve /debug/pprof and /debug/memstats on the admin port, to holders of the admin token only",
		bind:  func(c *Config) value { return boolVar(&c.DebugEndpoints) }},
	{flag: "memory-limit", key: "memory_limit", arg: "bytes",
		usage: "the container's memory limit, in bytes or with Ki, Mi, Gi (512Mi); half of it is what clients may make the server hold (docs/operations.md, the memory budget), and the Go runtime's soft limit is set to 90 % of it unless GOMEMLIMIT is set; 0 takes GOMEMLIMIT as the limit, or runs without a budget",
		bind:  func(c *Config) value { return bytesVar(&c.MemoryLimit) }},
	{flag: "log-format", key: "log_format", arg: "format",
		usage: "json (lines for a log pipeline) or console (lines a person reads)",
		bind:  func(c *Config) value { return stringVar(&c.LogFormat) }},
	{flag: "dev", key: "dev",
		usage: "the same as --log-format console (given with --log-format, the one from the later layer wins: flags over the environment over the file)",
		bind:  func(c *Config) value { return boolVar(&c.Dev) }},
	{flag: "log-level", key: "log_level", arg: "level",
		usage: "least severe level logged: debug, info, warn or error",
		bind:  func(c *Config) value { return stringVar(&c.LogLevel) }},

	{flag: "session-limit", key: "sessions.limit",
		usage: "concurrent sessions per process; more are refused with session_limit",
		bind:  func(c *Config) value { return intVar(&c.Sessions.Limit) }},
	{flag: "max-message-bytes", key: "sessions.max_message_bytes", arg: "bytes",
		usage: "largest client message, 1 KiB to 16 MiB; larger ones close the session with frame_too_large",
		bind:  func(c *Config) value { return int64Var(&c.Sessions.MaxMessageBytes) }},
	{flag: "inbound-rate", key: "sessions.inbound_rate", arg: "per-second",
		usage: "sustained client messages per second per session",
		bind:  func(c *Config) value { return float64Var(&c.Sessions.InboundRate) }},
	{flag: "inbound-burst", key: "sessions.inbound_burst",
		usage: "client messages a session may send at once above --inbound-rate",
		bind:  func(c *Config) value { return intVar(&c.Sessions.InboundBurst) }},
	{flag: "outbound-queue", key: "sessions.outbound_queue", arg: "messages",
		usage: "messages queued for a client before it counts as too slow and is closed",
		bind:  func(c *Config) value { return intVar(&c.Sessions.OutboundQueue) }},
	{flag: "idle-timeout", key: "sessions.idle_timeout",
		usage: "close a session after this long without client messages",
		bind:  func(c *Config) value { return durationVar(&c.Sessions.IdleTimeout) }},
	{flag: "max-duration", key: "sessions.max_duration",
		usage: "close a session this long after it started, active or not",
		bind:  func(c *Config) value { return durationVar(&c.Sessions.MaxDuration) }},
	{flag: "resume-notice", key: "sessions.resume_notice",
		usage: "this long before a session reaches --max-duration (or the backend's own session cap, 60 min for openai) the client gets gateway.draining with a resume handle, to carry the conversation into a new session; 0 sends none",
		bind:  func(c *Config) value { return durationVar(&c.Sessions.ResumeNotice) }},
	{flag: "write-timeout", key: "sessions.write_timeout",
		usage: "a client that cannot take one write in this time is closed as slow",
		bind:  func(c *Config) value { return durationVar(&c.Sessions.WriteTimeout) }},
	{flag: "sample-rate", key: "sessions.sample_rate", arg: "hz",
		usage: "PCM16 audio sample rate: 16000 or 24000",
		bind:  func(c *Config) value { return intVar(&c.Sessions.SampleRate) }},
	{flag: "outbound-queue-bytes", key: "sessions.outbound_queue_bytes", arg: "bytes",
		usage: "bytes queued for a client before it counts as too slow and is closed, 64Ki to 64Mi (one message always fits)",
		bind:  func(c *Config) value { return bytesVar(&c.Sessions.OutboundQueueBytes) }},
	{flag: "max-buffered-audio", key: "sessions.max_buffered_audio",
		usage: "audio one session may make the server hold, uncommitted or waiting to be played, 1s to 60s; more is refused with buffer_full",
		bind:  func(c *Config) value { return durationVar(&c.Sessions.MaxBufferedAudio) }},
	{flag: "max-sessions-per-token", key: "sessions.max_per_token", arg: "sessions",
		usage: "sessions one client token may open on this process over its lifetime, 1 to 1000; a reuse beyond is refused with 401 unauthorized",
		bind:  func(c *Config) value { return intVar(&c.Sessions.MaxPerToken) }},
	{flag: "max-sessions-per-key", key: "sessions.max_per_api_key", arg: "sessions",
		usage: "concurrent sessions of one API key on this process, directly or through the client tokens it minted; more are closed with api_key_session_limit; 0 means no cap",
		bind:  func(c *Config) value { return intVar(&c.Sessions.MaxPerAPIKey) }},
	{flag: "max-sessions-per-ip", key: "sessions.max_per_client_ip", arg: "sessions",
		usage: "concurrent sessions of one client address (an IPv6 client's /64) on this process; more are closed with client_ip_session_limit; 0 means no cap (set --trusted-proxies behind a load balancer first)",
		bind:  func(c *Config) value { return intVar(&c.Sessions.MaxPerClientIP) }},
	{flag: "max-handshakes", key: "sessions.max_handshakes", arg: "requests",
		usage: "requests on the sessions path that are not a session yet (authentication, upgrade); more are refused with 503 server_busy",
		bind:  func(c *Config) value { return intVar(&c.Sessions.MaxHandshakes) }},

	{flag: "auth-fail-window", key: "rate_limit.window",
		usage: "failed authentications from one IP are counted over this window",
		bind:  func(c *Config) value { return durationVar(&c.RateLimit.Window) }},
	{flag: "auth-block-duration", key: "rate_limit.block_duration",
		usage: "how long a blocked IP stays blocked",
		bind:  func(c *Config) value { return durationVar(&c.RateLimit.BlockDuration) }},
	{flag: "auth-suspicious-delay", key: "rate_limit.suspicious_delay",
		usage: "delay added to each attempt from a suspicious IP; 0 adds none",
		bind:  func(c *Config) value { return durationVar(&c.RateLimit.SuspiciousDelay) }},
	{flag: "auth-cleanup-interval", key: "rate_limit.cleanup_interval",
		usage: "how often expired entries are removed from the tracker",
		bind:  func(c *Config) value { return durationVar(&c.RateLimit.CleanupInterval) }},
	{flag: "auth-suspicious-after", key: "rate_limit.suspicious_after", arg: "failures",
		usage: "failures within the window after which an IP is slowed down",
		bind:  func(c *Config) value { return intVar(&c.RateLimit.SuspiciousAfter) }},
	{flag: "auth-block-after", key: "rate_limit.block_after", arg: "failures",
		usage: "failures within the window after which an IP is blocked; more than --auth-suspicious-after",
		bind:  func(c *Config) value { return intVar(&c.RateLimit.BlockAfter) }},
	{flag: "auth-max-tracked", key: "rate_limit.max_tracked", arg: "ips",
		usage: "most IPs tracked at once; the oldest entries are evicted beyond it",
		bind:  func(c *Config) value { return intVar(&c.RateLimit.MaxTracked) }},
	{flag: "trusted-proxies", key: "rate_limit.trusted_proxies", arg: "cidrs",
		usage: "comma-separated IPs or CIDRs of proxies whose X-Forwarded-For is believed; the flag may be repeated",
		bind:  func(c *Config) value { return listVar(&c.RateLimit.TrustedProxies) }},
	{flag: "ratelimit-state-file", key: "rate_limit.state_file", arg: "path",
		usage: "tracker state is read from this file at start if it exists and written at shutdown, so blocks survive a rollout",
		bind:  func(c *Config) value { return stringVar(&c.RateLimit.StateFile) }},

	{flag: "cluster-listen", key: "cluster.listen", arg: "host:port",
		usage: "gossip address (UDP and TCP) shared with the other replicas, so that a block decided on one holds on all and survives rollouts (docs/operations.md, \"The fleet's limiter\"); needs --fleet-secret-dir, whose fleet-key encrypts it; empty: this process limits alone",
		bind:  func(c *Config) value { return stringVar(&c.Cluster.Listen) }},
	{flag: "cluster-advertise", key: "cluster.advertise", arg: "host:port",
		usage: "gossip address the other replicas reach this one at (the pod IP); empty derives it from --cluster-listen",
		bind:  func(c *Config) value { return stringVar(&c.Cluster.Advertise) }},
	{flag: "cluster-peers", key: "cluster.peers", arg: "host:port,...",
		usage: "other replicas' gossip addresses, or DNS names resolved to them again on every join attempt (the headless Service); the flag may be repeated",
		bind:  func(c *Config) value { return listVar(&c.Cluster.Peers) }},
	{flag: "cluster-peers-file", key: "cluster.peers_file", arg: "path",
		usage: "file of more gossip addresses, one host:port a line, read again on every join attempt (the operator writes its pods' addresses there, for clusters without DNS for Services)",
		bind:  func(c *Config) value { return stringVar(&c.Cluster.PeersFile) }},
	{flag: "cluster-settle-timeout", key: "cluster.settle_timeout",
		usage: "longest wait for a peer's limiter state before readiness; a replica that finds no peer is ready at once",
		bind:  func(c *Config) value { return durationVar(&c.Cluster.SettleTimeout) }},

	{flag: "drain-timeout", key: "drain.timeout",
		usage: "from the start of termination (preStop or SIGTERM) to the drain deadline, when the sessions left are closed with 1012; the pod's terminationGracePeriodSeconds must be at least this plus --exit-margin",
		bind:  func(c *Config) value { return durationVar(&c.Drain.Timeout) }},
	{flag: "propagation-delay", key: "drain.propagation_delay",
		usage: "after readiness fails, keep accepting sessions this long while endpoints update",
		bind:  func(c *Config) value { return durationVar(&c.Drain.PropagationDelay) }},
	{flag: "notify-window", key: "drain.notify_window",
		usage: "spread gateway.draining notices over this window so clients do not reconnect at once",
		bind:  func(c *Config) value { return durationVar(&c.Drain.NotifyWindow) }},
	{flag: "reconnect-after", key: "drain.reconnect_after",
		usage: "base reconnect hint sent to draining clients; each also gets jitter",
		bind:  func(c *Config) value { return durationVar(&c.Drain.ReconnectAfter) }},
	{flag: "exit-margin", key: "drain.exit_margin",
		usage: "time kept after the drain deadline for closing connections, flushing and exiting",
		bind:  func(c *Config) value { return durationVar(&c.Drain.ExitMargin) }},

	{flag: "openai-url", key: "openai.url", arg: "ws-url",
		usage: "upstream OpenAI Realtime WebSocket endpoint (ws:// or wss://)",
		bind:  func(c *Config) value { return stringVar(&c.OpenAI.URL) }},
	{flag: "openai-model", key: "openai.model", arg: "name",
		usage: "model requested from the upstream, sent as the URL's model parameter; empty leaves the URL as it is",
		bind:  func(c *Config) value { return stringVar(&c.OpenAI.Model) }},
	{flag: "openai-models", key: "openai.models", arg: "names",
		usage: "models a client may ask for with ?model= or session.update, comma-separated or repeated (at most 32); empty allows --openai-model only",
		bind:  func(c *Config) value { return listVar(&c.OpenAI.Models) }},
	{flag: "openai-api-key-file", key: "openai.api_key_file", arg: "path",
		usage: "file holding the upstream API key (a mounted Secret); required with --backend openai; a rotated key is used from the next session on",
		bind:  func(c *Config) value { return stringVar(&c.OpenAI.APIKeyFile) }},
	{flag: "openai-key-poll-interval", key: "openai.key_poll_interval",
		usage: "how often the upstream API key file is checked for a new key",
		bind:  func(c *Config) value { return durationVar(&c.OpenAI.KeyPollInterval) }},
	{flag: "openai-dial-timeout", key: "openai.dial_timeout",
		usage: "a session whose upstream handshake takes longer ends with backend_unavailable",
		bind:  func(c *Config) value { return durationVar(&c.OpenAI.DialTimeout) }},
	{flag: "openai-stall-timeout", key: "openai.stall_timeout",
		usage: "upstream silence (no event, no answer to the gateway's pings) this long ends the session with upstream_stalled",
		bind:  func(c *Config) value { return durationVar(&c.OpenAI.StallTimeout) }},
	{flag: "openai-max-message-bytes", key: "openai.max_message_bytes", arg: "bytes",
		usage: "largest upstream message, 64 KiB to 64 MiB; a larger one ends the session with upstream_protocol_error",
		bind:  func(c *Config) value { return int64Var(&c.OpenAI.MaxMessageBytes) }},
}

// groups are the YAML mappings that hold settings, with their usage headings.
var groups = []struct{ key, title string }{
	{"", "Server"},
	{"sessions", "Sessions"},
	{"rate_limit", "Failed-authentication rate limit"},
	{"cluster", "The fleet's shared rate limiter (gossip)"},
	{"drain", "Drain on termination"},
	{"openai", "OpenAI Realtime backend (--backend openai)"},
}

var (
	settingByKey  = map[string]setting{}
	settingByFlag = map[string]setting{}
)

func init() {
	for _, s := range settings {
		settingByKey[s.key] = s
		settingByFlag[s.flag] = s
	}
}

// group returns the YAML mapping a setting lives in, "" for the top level.
func (s setting) group() string {
	group, _, found := strings.Cut(s.key, ".")
	if !found {
		return ""
	}
	return group
}

// newFlagSet returns flags that write into cfg. Errors are returned, never
// printed: Load's caller decides what the user sees.
func newFlagSet(cfg *Config) *flag.FlagSet {
	fs := flag.NewFlagSet("voice-server", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	for _, s := range settings {
		fs.Var(s.bind(cfg), s.flag, s.usage)
	}
	return fs
}

// Usage writes the help for every flag, with its default, environment
// variable and YAML key.
func Usage(w io.Writer) {
	defaults := Default()
	var b strings.Builder
	b.WriteString("Usage: voice-server [flags]\n\n")
	b.WriteString("Settings come from, lowest precedence first: defaults, the YAML file named by\n")
	b.WriteString("--config, VOICEGATEWAY_* environment variables, then flags. Durations are\n")
	b.WriteString("written like 30s, 2m or 1h30m.\n\n")
	fmt.Fprintf(&b, "  --%s path\n      YAML file of settings (env %s%s)\n",
		configFlag, EnvPrefix, strings.ToUpper(configFlag))
	for _, g := range groups {
		fmt.Fprintf(&b, "\n%s:\n", g.title)
		for _, s := range settings {
			if s.group() != g.key {
				continue
			}
			v := s.bind(&defaults)
			b.WriteString("  --" + s.flag)
			if v.kind() != kindBool {
				arg := s.arg
				if arg == "" {
					arg = v.kind().String()
				}
				b.WriteString(" " + arg)
			}
			if def := v.String(); def != "" && def != `""` && def != "false" {
				fmt.Fprintf(&b, " (default %s)", def)
			}
			fmt.Fprintf(&b, "\n      %s\n      env %s, yaml %s\n", s.usage, s.envName(), s.key)
		}
	}
	_, _ = io.WriteString(w, b.String())
}

// kind is the type of a setting's value. It decides which YAML value types
// are accepted, so that `idle_timeout: 30` is an error rather than 30ns.
type kind int

const (
	kindString kind = iota
	kindBool
	kindInt
	kindFloat
	kindDuration
	kindList
	kindBytes
)

func (k kind) String() string {
	switch k {
	case kindBool:
		return "bool"
	case kindInt:
		return "int"
	case kindFloat:
		return "number"
	case kindDuration:
		return "duration"
	case kindList:
		return "list"
	case kindBytes:
		return "bytes"
	default:
		return "string"
	}
}

// value is a flag.Value that also knows its kind and its YAML form.
type value interface {
	flag.Value
	kind() kind
	// fileValue is the setting as it would be written in the YAML file.
	fileValue() any
}

// scalar is a value of one field. String must cope with a nil field because
// the flag package calls it on zero values.
type scalar[T any] struct {
	field  *T
	k      kind
	parse  func(string) (T, error)
	format func(T) string
	toFile func(T) any
}

func (v *scalar[T]) Set(raw string) error {
	parsed, err := v.parse(raw)
	if err != nil {
		return err
	}
	*v.field = parsed
	return nil
}

func (v *scalar[T]) String() string {
	if v == nil || v.field == nil {
		return ""
	}
	return v.format(*v.field)
}

func (v *scalar[T]) kind() kind { return v.k }

func (v *scalar[T]) fileValue() any { return v.toFile(*v.field) }

func stringVar(field *string) value {
	return &scalar[string]{
		field:  field,
		k:      kindString,
		parse:  func(raw string) (string, error) { return raw, nil },
		format: strconv.Quote,
		toFile: func(s string) any { return s },
	}
}

// boolScalar lets `--insecure-no-auth` stand alone without `=true`.
type boolScalar struct{ *scalar[bool] }

func (boolScalar) IsBoolFlag() bool { return true }

func boolVar(field *bool) value {
	return boolScalar{&scalar[bool]{
		field: field,
		k:     kindBool,
		parse: func(raw string) (bool, error) {
			b, err := strconv.ParseBool(raw)
			if err != nil {
				return false, fmt.Errorf("%q is not a boolean; use true or false", raw)
			}
			return b, nil
		},
		format: strconv.FormatBool,
		toFile: func(b bool) any { return b },
	}}
}

func intVar(field *int) value {
	return &scalar[int]{
		field: field,
		k:     kindInt,
		parse: func(raw string) (int, error) {
			n, err := strconv.Atoi(raw)
			if err != nil {
				return 0, fmt.Errorf("%q is not a whole number", raw)
			}
			return n, nil
		},
		format: strconv.Itoa,
		toFile: func(n int) any { return n },
	}
}

func int64Var(field *int64) value {
	return &scalar[int64]{
		field: field,
		k:     kindInt,
		parse: func(raw string) (int64, error) {
			n, err := strconv.ParseInt(raw, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%q is not a whole number", raw)
			}
			return n, nil
		},
		format: func(n int64) string { return strconv.FormatInt(n, 10) },
		toFile: func(n int64) any { return n },
	}
}

func float64Var(field *float64) value {
	return &scalar[float64]{
		field: field,
		k:     kindFloat,
		parse: func(raw string) (float64, error) {
			f, err := strconv.ParseFloat(raw, 64)
			// NaN and infinities parse, but no limit can be one.
			if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
				return 0, fmt.Errorf("%q is not a finite number", raw)
			}
			return f, nil
		},
		format: func(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) },
		toFile: func(f float64) any { return f },
	}
}

// bytesVar is a size in bytes, written as a whole number or with a
// Kubernetes suffix (ParseBytes); it is shown in the largest binary unit
// that divides it.
func bytesVar(field *int64) value {
	return &scalar[int64]{
		field:  field,
		k:      kindBytes,
		parse:  ParseBytes,
		format: FormatBytes,
		toFile: func(n int64) any { return FormatBytes(n) },
	}
}

func durationVar(field *time.Duration) value {
	return &scalar[time.Duration]{
		field: field,
		k:     kindDuration,
		parse: func(raw string) (time.Duration, error) {
			d, err := time.ParseDuration(raw)
			if err != nil {
				return 0, fmt.Errorf("%q is not a duration; write it like 30s, 2m or 1h30m", raw)
			}
			return d, nil
		},
		format: formatDuration,
		toFile: func(d time.Duration) any { return formatDuration(d) },
	}
}

// formatDuration drops the zero units time.Duration.String keeps, so that
// defaults read "2m" rather than "2m0s". The result still parses.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// listValue holds a comma-separated list. Its first Set replaces what an
// earlier source chose; later Sets of the same flag append, so that
// --trusted-proxies may be repeated.
type listValue struct {
	field    *[]string
	appended bool
}

func listVar(field *[]string) value { return &listValue{field: field} }

func (v *listValue) Set(raw string) error {
	var items []string
	for item := range strings.SplitSeq(raw, ",") {
		if item = strings.TrimSpace(item); item != "" {
			items = append(items, item)
		}
	}
	if v.appended {
		*v.field = append(*v.field, items...)
	} else {
		*v.field = items
	}
	v.appended = true
	return nil
}

func (v *listValue) String() string {
	if v == nil || v.field == nil {
		return ""
	}
	return strings.Join(*v.field, ",")
}

func (v *listValue) kind() kind { return kindList }

func (v *listValue) fileValue() any {
	// An empty list, not null, so the file shows the key's type.
	return append([]string{}, *v.field...)
}
