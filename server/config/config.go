// Package config holds every setting of the voice server in one struct and
// fills it from, in rising precedence, built-in defaults, a YAML file (the
// ConfigMap the operator mounts), VOICEGATEWAY_* environment variables and
// command-line flags.
//
// One table (settings.go) names each setting once and drives all four
// sources, the usage text and the effective-config log line, so a new
// setting cannot be reachable from flags but silently ignored in the file.
// Validation reports every problem at once, each naming the flag, because a
// pod that crash-loops on one error at a time costs a rollout per typo.
package config

import (
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/voicegateway/voicegateway/internal/boundedfile"
)

// MaxConfigFileBytes bounds the file --config names: every setting fits in
// a few kilobytes, and a wrong path (a log, a device) must fail, not fill
// the memory.
const MaxConfigFileBytes = 1 << 20

// Backend names accepted by --backend.
const (
	BackendEcho   = "echo"
	BackendOpenAI = "openai"
)

// EnvPrefix starts the environment variable of every setting: the flag name
// upper-cased with '-' turned into '_', e.g. VOICEGATEWAY_API_KEYS_FILE.
const EnvPrefix = "VOICEGATEWAY_"

// Config is the voice server's complete configuration. The json tags are the
// keys of the YAML file.
type Config struct {
	// ConfigFile is the file the settings were read from, empty when none.
	// It is reported in the startup log so that an operator can tell which
	// ConfigMap a pod actually read; it cannot itself be set in the file.
	ConfigFile string `json:"-"`

	Listen      string `json:"listen"`
	AdminListen string `json:"admin_listen"`
	Backend     string `json:"backend"`

	APIKeysFile    string `json:"api_keys_file"`
	InsecureNoAuth bool   `json:"insecure_no_auth"`
	// FleetSecretDir is where the fleet Secret is mounted (server/fleet):
	// the client-token signing keys every replica shares and the admin
	// token. Empty: tokens are signed with a key of this process alone and
	// the admin endpoints that need the token are disabled.
	FleetSecretDir string        `json:"fleet_secret_dir"`
	ClientTokenTTL time.Duration `json:"client_token_ttl"`
	// AllowAPIKeyInBrowser accepts a long-lived API key in the
	// openai-insecure-api-key.<key> subprotocol, where browsers put it
	// and page source and devtools show it. Off: only client tokens
	// (ek_…) are accepted there.
	AllowAPIKeyInBrowser bool `json:"allow_api_key_in_browser"`
	// SecretPollInterval is how often the API key file and the fleet
	// Secret's files are read again for a rotated Secret.
	SecretPollInterval time.Duration `json:"secret_poll_interval"`
	// DebugEndpoints serves /debug/pprof and /debug/memstats on the admin
	// port, to holders of the admin token only.
	DebugEndpoints bool `json:"debug_endpoints"`
	// MemoryLimit is the container's memory limit in bytes (the operator
	// sets it from limits.memory through the downward API); 0 means
	// unknown, and then GOMEMLIMIT, if set, stands for it. Half of it is
	// the budget of what clients may make the server hold (server/memory).
	MemoryLimit int64 `json:"memory_limit"`

	// Dev is --log-format console, kept for the command lines that say it.
	Dev       bool   `json:"dev"`
	LogFormat string `json:"log_format"`
	LogLevel  string `json:"log_level"`

	Sessions  SessionsConfig  `json:"sessions"`
	RateLimit RateLimitConfig `json:"rate_limit"`
	Cluster   ClusterConfig   `json:"cluster"`
	Drain     DrainConfig     `json:"drain"`
	OpenAI    OpenAIConfig    `json:"openai"`
}

// SessionsConfig bounds what one session, and one process, may hold.
type SessionsConfig struct {
	Limit           int           `json:"limit"`
	MaxMessageBytes int64         `json:"max_message_bytes"`
	InboundRate     float64       `json:"inbound_rate"`
	InboundBurst    int           `json:"inbound_burst"`
	OutboundQueue   int           `json:"outbound_queue"`
	IdleTimeout     time.Duration `json:"idle_timeout"`
	MaxDuration     time.Duration `json:"max_duration"`
	// ResumeNotice is how long before MaxDuration (or the backend's own
	// session cap) the client is told gateway.draining with a resume
	// handle; 0 tells nothing.
	ResumeNotice time.Duration `json:"resume_notice"`
	WriteTimeout time.Duration `json:"write_timeout"`
	SampleRate   int           `json:"sample_rate"`
	// OutboundQueueBytes bounds the bytes of the outbound queue as
	// OutboundQueue bounds its messages (a single message always fits).
	OutboundQueueBytes int64 `json:"outbound_queue_bytes"`
	// MaxBufferedAudio bounds the audio one session may make the server
	// hold: uncommitted input, and committed turns waiting to be played.
	MaxBufferedAudio time.Duration `json:"max_buffered_audio"`
	// MaxPerToken is how many sessions one client token may open on this
	// process over its lifetime (the replay cache is per process).
	MaxPerToken int `json:"max_per_token"`
	// MaxPerAPIKey and MaxPerClientIP cap the concurrent sessions of one
	// API key (directly or through the tokens it minted) and of one client
	// address (an IPv6 client's /64); 0 means no cap.
	MaxPerAPIKey   int `json:"max_per_api_key"`
	MaxPerClientIP int `json:"max_per_client_ip"`
	// MaxHandshakes caps the requests on the sessions path that are not a
	// session yet; more are refused with 503 server_busy.
	MaxHandshakes int `json:"max_handshakes"`
}

// RateLimitConfig tunes the tracking of failed authentication per client IP.
type RateLimitConfig struct {
	Window          time.Duration `json:"window"`
	BlockDuration   time.Duration `json:"block_duration"`
	SuspiciousDelay time.Duration `json:"suspicious_delay"`
	CleanupInterval time.Duration `json:"cleanup_interval"`
	SuspiciousAfter int           `json:"suspicious_after"`
	BlockAfter      int           `json:"block_after"`
	MaxTracked      int           `json:"max_tracked"`
	TrustedProxies  []string      `json:"trusted_proxies"`
	StateFile       string        `json:"state_file"`
}

// ClusterConfig makes the replicas of a fleet share the rate limiter's
// state by gossip (server/cluster). Off while Listen is empty.
type ClusterConfig struct {
	// Listen is the gossip address (UDP and TCP), host:port.
	Listen string `json:"listen"`
	// Advertise is the address other replicas reach this one at (the pod
	// IP); empty derives it from Listen.
	Advertise string `json:"advertise"`
	// Peers are host:port entries, addresses or DNS names (the headless
	// Service), resolved again on every join attempt.
	Peers []string `json:"peers"`
	// PeersFile is read again on every join attempt for more host:port
	// entries, one a line (the operator's list of its pods).
	PeersFile string `json:"peers_file"`
	// SettleTimeout bounds the wait for a peer's state before readiness.
	SettleTimeout time.Duration `json:"settle_timeout"`
}

// DrainConfig times the drain that runs when the pod is terminated: sessions
// may run until Timeout after termination begins, and the process has
// ExitMargin after that to close what is left and exit. The pod's
// terminationGracePeriodSeconds must be at least GracePeriod().
type DrainConfig struct {
	Timeout          time.Duration `json:"timeout"`
	PropagationDelay time.Duration `json:"propagation_delay"`
	NotifyWindow     time.Duration `json:"notify_window"`
	ReconnectAfter   time.Duration `json:"reconnect_after"`
	ExitMargin       time.Duration `json:"exit_margin"`
}

// OpenAIConfig configures the openai backend (--backend openai), which relays
// every session to the OpenAI Realtime API over its own upstream WebSocket.
type OpenAIConfig struct {
	// URL is the upstream WebSocket endpoint; Model, when set, becomes its
	// model query parameter.
	URL   string `json:"url"`
	Model string `json:"model"`
	// Models is the allowlist of models a client may ask for (?model= on
	// the session URL, or session.update's model); empty allows Model only.
	Models []string `json:"models"`
	// APIKeyFile holds the key sent as Authorization: Bearer (a mounted
	// Secret); it is polled every KeyPollInterval and a changed key is used
	// from the next session on.
	APIKeyFile      string        `json:"api_key_file"`
	KeyPollInterval time.Duration `json:"key_poll_interval"`
	DialTimeout     time.Duration `json:"dial_timeout"`
	// StallTimeout is how long the upstream may stay silent (no event, no
	// answer to the gateway's pings) before the session ends as stalled.
	StallTimeout    time.Duration `json:"stall_timeout"`
	MaxMessageBytes int64         `json:"max_message_bytes"`
}

// DefaultOpenAIURL is the OpenAI Realtime WebSocket endpoint.
const DefaultOpenAIURL = "wss://api.openai.com/v1/realtime"

// Default returns the configuration used for every setting no source sets.
// It does not validate on its own: authentication has no safe default, so
// one of --api-keys-file or --insecure-no-auth must be chosen explicitly.
func Default() Config {
	return Config{
		Listen:             ":8080",
		AdminListen:        ":9090",
		Backend:            BackendEcho,
		ClientTokenTTL:     60 * time.Second,
		SecretPollInterval: 10 * time.Second,
		LogFormat:          "json",
		LogLevel:           "info",
		Sessions: SessionsConfig{
			Limit:           1000,
			MaxMessageBytes: 256 << 10,
			InboundRate:     200,
			InboundBurst:    400,
			OutboundQueue:   256,
			IdleTimeout:     2 * time.Minute,
			MaxDuration:     time.Hour,
			ResumeNotice:    time.Minute,
			WriteTimeout:    10 * time.Second,
			SampleRate:      24000,

			OutboundQueueBytes: 1 << 20,
			MaxBufferedAudio:   10 * time.Second,
			MaxPerToken:        1,
			MaxHandshakes:      256,
		},
		RateLimit: RateLimitConfig{
			Window:          time.Minute,
			BlockDuration:   15 * time.Minute,
			SuspiciousDelay: time.Second,
			CleanupInterval: time.Minute,
			SuspiciousAfter: 5,
			BlockAfter:      10,
			MaxTracked:      100000,
		},
		Cluster: ClusterConfig{SettleTimeout: 15 * time.Second},
		Drain: DrainConfig{
			Timeout:          27 * time.Second,
			PropagationDelay: 5 * time.Second,
			NotifyWindow:     5 * time.Second,
			ReconnectAfter:   time.Second,
			ExitMargin:       3 * time.Second,
		},
		OpenAI: OpenAIConfig{
			URL:             DefaultOpenAIURL,
			Model:           "gpt-realtime",
			KeyPollInterval: 10 * time.Second,
			DialTimeout:     10 * time.Second,
			StallTimeout:    15 * time.Second,
			MaxMessageBytes: 4 << 20,
		},
	}
}

// GracePeriod is the least terminationGracePeriodSeconds the drain fits in:
// the drain timeout, then the exit margin. Nobody derives the timeout from
// it: the operator sends the timeout, and sets the pod's grace period from
// this sum.
func (c Config) GracePeriod() time.Duration {
	return c.Drain.Timeout + c.Drain.ExitMargin
}

// configFlag names the flag (and, with EnvPrefix, the variable) that points
// at the YAML file. It is not a setting: the file cannot name itself.
const configFlag = "config"

// Load builds the configuration from defaults, the YAML file named by
// --config (or VOICEGATEWAY_CONFIG), the environment and args, and validates
// it. args excludes the program name; getenv is os.Getenv outside tests. An
// empty environment variable counts as unset.
//
// With -h or --help in args, Load returns an error wrapping flag.ErrHelp and
// prints nothing; the caller prints Usage and exits successfully.
func Load(args []string, getenv func(string) string) (Config, error) {
	// The first pass only finds --config and rejects malformed flags before
	// any file is read. Its values land in a scratch Config and are
	// discarded: flags are applied again, last, so that they win.
	scratch := Default()
	var configFile string
	fs := newFlagSet(&scratch)
	fs.StringVar(&configFile, configFlag, "", "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return Config{}, err
		}
		return Config{}, fmt.Errorf("%w (--help lists the flags)", err)
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q: every setting is a --flag", fs.Arg(0))
	}
	if !flagWasSet(fs, configFlag) {
		configFile = getenv(EnvPrefix + "CONFIG")
	}

	cfg := Default()
	cfg.ConfigFile = configFile
	if configFile != "" {
		data, err := boundedfile.Read(configFile, MaxConfigFileBytes)
		if err != nil {
			return Config{}, fmt.Errorf("--%s: %w", configFlag, err)
		}
		if err := applyFile(&cfg, data); err != nil {
			return Config{}, fmt.Errorf("config file %s: %w", configFile, err)
		}
	}
	if err := applyEnv(&cfg, getenv); err != nil {
		return Config{}, err
	}

	// Parsing the same args again sets exactly the flags present on the
	// command line, in order, so a flag left out never resets a value the
	// file or the environment chose. It cannot fail where the first pass
	// succeeded.
	final := newFlagSet(&cfg)
	final.StringVar(new(string), configFlag, "", "")
	if err := final.Parse(args); err != nil {
		return Config{}, err
	}
	// --dev is --log-format console: of the two, the one given at the
	// later layer wins, so that a command line saying --log-format json
	// is obeyed in an environment that sets VOICEGATEWAY_DEV.
	switch {
	case flagWasSet(final, "dev"):
	case flagWasSet(final, "log-format"):
		cfg.Dev = false
	case getenv(EnvPrefix+"LOG_FORMAT") != "" && getenv(EnvPrefix+"DEV") == "":
		cfg.Dev = false
	}

	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// applyEnv sets every setting whose variable is non-empty and reports all
// malformed variables together.
func applyEnv(cfg *Config, getenv func(string) string) error {
	var errs []error
	for _, s := range settings {
		name := s.envName()
		raw := getenv(name)
		if raw == "" {
			continue
		}
		if err := s.bind(cfg).Set(raw); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %w", name, raw, err))
		}
	}
	return errors.Join(errs...)
}

func flagWasSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}
