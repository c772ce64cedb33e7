// Package openai is the backend that relays each session to the OpenAI
// Realtime API, so that clients reach it through the gateway's limits,
// authentication and drain, and never hold the API key.
//
// Every session gets its own upstream WebSocket. Client events go up
// unchanged, unknown types included; a binary audio message becomes an
// input_audio_buffer.append. Upstream events come down unchanged with their
// event_id, unknown types included; audio deltas become binary messages for
// clients that negotiated them. The gateway owns the audio format and the
// model: a session.update that would change them is refused, never
// rewritten behind the client's back, and nothing the upstream did not say
// is ever answered on its behalf. Upstream trouble ends the session with
// one of the upstream_* error codes (docs/protocol.md).
//
// A connection owns three goroutines, all joined in Close: the reader
// (upstream to client), the writer (client to upstream, fed by a bounded
// relay queue) and the watchdog (stall detection on the injected clock),
// plus a pinger that exists only while a ping waits for its pong.
package openai

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/utils/clock"

	"github.com/voicegateway/voicegateway/server/auth"
	"github.com/voicegateway/voicegateway/server/backend"
	"github.com/voicegateway/voicegateway/server/config"
	"github.com/voicegateway/voicegateway/server/metrics"
	"github.com/voicegateway/voicegateway/server/protocol"
)

// Name is the backend's configured name.
const Name = config.BackendOpenAI

// Options are what the backend needs besides its settings.
type Options struct {
	// Clock drives the stall detection; nil means the real clock.
	Clock clock.WithTickerAndDelayedExecution
	// Metrics receives the upstream metrics; nil means a private registry.
	Metrics *metrics.Server
	Log     logr.Logger
}

// Backend is the openai backend. It is safe for concurrent use by every
// session.
type Backend struct {
	cfg     config.OpenAIConfig
	url     string
	key     *auth.SecretFile[string]
	clock   clock.WithTickerAndDelayedExecution
	metrics *metrics.Server
	log     logr.Logger
	client  *http.Client
}

var (
	_ backend.Backend = (*Backend)(nil)
	_ backend.Runner  = (*Backend)(nil)
)

// New reads the API key file and prepares the backend. Nothing is dialled
// until a session opens.
func New(cfg config.OpenAIConfig, opts Options) (*Backend, error) {
	key, err := auth.NewSecretFile(cfg.APIKeyFile, auth.ParseBearerSecret)
	if err != nil {
		return nil, fmt.Errorf("--openai-api-key-file: %w", err)
	}
	u, err := upstreamURL(cfg.URL, cfg.Model)
	if err != nil {
		return nil, fmt.Errorf("--openai-url: %w", err)
	}
	b := &Backend{
		cfg: cfg, url: u, key: key, clock: opts.Clock, metrics: opts.Metrics,
		log: opts.Log, client: newHTTPClient(),
	}
	if b.clock == nil {
		b.clock = clock.RealClock{}
	}
	if b.metrics == nil {
		b.metrics = metrics.New()
	}
	return b, nil
}

// upstreamURL sets the model query parameter, replacing one already there;
// an empty model leaves the URL as configured. Its errors name the URL
// redacted (config.RedactURL): url.Parse's own would quote it whole.
func upstreamURL(raw, model string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("--openai-url %q is not a URL", config.RedactURL(raw))
	}
	if u.Scheme != "ws" && u.Scheme != "wss" {
		return "", fmt.Errorf("--openai-url %q is not a ws:// or wss:// URL", config.RedactURL(raw))
	}
	if model != "" {
		q := u.Query()
		q.Set("model", model)
		u.RawQuery = q.Encode()
	}
	return u.String(), nil
}

// allowed reports whether a client may ask for model (--openai-models;
// --openai-model alone when that is empty; anything when both are).
func (b *Backend) allowed(model string) bool {
	list := b.cfg.AllowedModels()
	return len(list) == 0 || slices.Contains(list, model)
}

// UpstreamSessionCap is how long the OpenAI Realtime API keeps a session.
const UpstreamSessionCap = 60 * time.Minute

var _ backend.Capped = (*Backend)(nil)

// MaxSessionLength implements backend.Capped.
func (b *Backend) MaxSessionLength() time.Duration { return UpstreamSessionCap }

// Name implements backend.Backend.
func (b *Backend) Name() string { return Name }

// URL is the upstream endpoint sessions dial.
func (b *Backend) URL() string { return b.url }

// Run watches the API key file until ctx is done, so that a rotated
// Secret is used from the next session on without a restart. Sessions
// already open keep the upstream they authenticated.
func (b *Backend) Run(ctx context.Context) error {
	return b.key.Watch(ctx, b.cfg.KeyPollInterval, b.clock, b.log.WithName("key"))
}

// Open implements backend.Backend: it dials the upstream (bounded by the
// dial timeout and by ctx, the session's lifetime) and starts relaying. A
// failure is returned as the *protocol.Error the client is told.
func (b *Backend) Open(ctx context.Context, info backend.Info, sink backend.Sink) (backend.Conn, error) {
	// A model outside the allowlist is refused before anything is dialled:
	// the upstream never hears of the session.
	if info.Model != "" && !b.allowed(info.Model) {
		return nil, protocol.Fatal(protocol.CodeModelNotAllowed, protocol.ClosePolicyViolation, protocol.ModelNotAllowedMessage(info.Model))
	}
	c := newConn(ctx, b, info, sink)
	c.url = b.url
	if info.Model != "" && info.Model != b.cfg.Model {
		// The configured URL parsed in New; only the model differs.
		c.url, _ = upstreamURL(b.cfg.URL, info.Model)
	}
	started := time.Now()
	up, err := b.dial(c)
	if err != nil {
		c.cancel()
		return nil, err
	}
	b.metrics.UpstreamDialSeconds.Observe(time.Since(started).Seconds())
	b.metrics.UpstreamConnections.Inc()
	c.start(up)
	return c, nil
}
