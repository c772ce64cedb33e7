// Package gateway assembles the voice server from its parts: the public
// handler (WebSocket sessions, client tokens, the demo page), the admin
// handler, the rate limiter, the key and fleet Secret watchers, the backend
// and the drain, and hands them to server/lifecycle, which runs them and
// owns the stop sequence.
package gateway

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/utils/clock"

	"github.com/voicegateway/voicegateway/internal/boundedfile"
	"github.com/voicegateway/voicegateway/server/admin"
	"github.com/voicegateway/voicegateway/server/auth"
	"github.com/voicegateway/voicegateway/server/backend"
	"github.com/voicegateway/voicegateway/server/backend/echo"
	"github.com/voicegateway/voicegateway/server/backend/openai"
	"github.com/voicegateway/voicegateway/server/clientip"
	"github.com/voicegateway/voicegateway/server/cluster"
	"github.com/voicegateway/voicegateway/server/config"
	"github.com/voicegateway/voicegateway/server/fleet"
	"github.com/voicegateway/voicegateway/server/lifecycle"
	"github.com/voicegateway/voicegateway/server/memory"
	"github.com/voicegateway/voicegateway/server/metrics"
	"github.com/voicegateway/voicegateway/server/protocol"
	"github.com/voicegateway/voicegateway/server/ratelimit"
	"github.com/voicegateway/voicegateway/server/resume"
	"github.com/voicegateway/voicegateway/server/session"
)

const (
	// refreshInterval bounds how often a request may make the server read
	// a fleet Secret file before its next poll (a token naming a key not
	// held yet, an admin token that differs).
	refreshInterval = time.Second
)

// Server is one voice server process.
type Server struct {
	cfg      config.Config
	log      logr.Logger
	clock    clock.WithTickerAndDelayedExecution
	metrics  *metrics.Server
	sessions *session.Registry
	// parker holds quiet sessions' readers without a goroutine each; it
	// runs as one of the loops.
	parker  *session.Parker
	drainer *lifecycle.Drainer
	budget  lifecycle.StopBudget
	limiter *ratelimit.Limiter
	// peer shares the limiter's state with the fleet (nil without
	// --cluster-listen); fleetKey is the fleet Secret's fleet-key.
	peer     *cluster.Peer
	fleetKey []byte
	// sealer seals and opens resume handles (server/resume).
	sealer *resume.Sealer
	// fleetKeyFile follows the mounted fleet-key while the peer gossips.
	fleetKeyFile *auth.SecretFile[[]byte]
	authn        *auth.Authenticator // nil with --insecure-no-auth
	keys         *auth.KeyStore
	// tokenKeys and adminToken follow the mounted fleet Secret; both are
	// nil without --fleet-secret-dir, adminToken also when the directory
	// holds no admin-token.
	tokenKeys  *auth.SecretFile[*auth.Keyring]
	adminToken *auth.SecretFile[string]
	backend    backend.Backend
	trusted    []netip.Prefix
	started    time.Time
	// memory is the budget of what clients may make the process hold.
	memory *memory.Budget
	// tokenUses is the client-token replay cache (nil with
	// --insecure-no-auth, where no token is ever presented).
	tokenUses *auth.TokenUses
	// suspiciousWaiting counts requests waiting out the rate limiter's
	// delay; at most maxSuspiciousWaiting wait at once.
	suspiciousWaiting atomic.Int64
	// httpLimits bound the public listener's ordinary requests (the
	// Public* constants; tests shorten them).
	httpLimits httpLimits

	// noKeyLogged is when a mint failing for want of a signing key was
	// last logged (Unix nanoseconds).
	noKeyLogged atomic.Int64

	// handlers counts WebSocket handlers, which outlive http.Server.Shutdown
	// because their connections are hijacked.
	handlers sync.WaitGroup
}

// Option changes how New builds a server.
type Option func(*Server)

// WithBackend replaces the configured backend, for backends that are not
// built in (tests inject failing ones).
func WithBackend(b backend.Backend) Option { return func(s *Server) { s.backend = b } }

// New builds a server from a validated configuration. Nothing runs yet.
func New(cfg config.Config, log logr.Logger, clk clock.WithTickerAndDelayedExecution, opts ...Option) (*Server, error) {
	s := &Server{cfg: cfg, log: log, clock: clk, metrics: metrics.New(), started: clk.Now(), httpLimits: defaultHTTPLimits}
	s.metrics.SessionsLimit.Set(float64(cfg.Sessions.Limit))
	var err error
	if s.trusted, err = clientip.ParsePrefixes(cfg.RateLimit.TrustedProxies); err != nil {
		return nil, fmt.Errorf("--trusted-proxies: %w", err)
	}
	rl := cfg.RateLimit
	s.limiter, err = ratelimit.New(ratelimit.Config{
		Window: rl.Window, SuspiciousAfter: rl.SuspiciousAfter, BlockAfter: rl.BlockAfter,
		BlockDuration: rl.BlockDuration, SuspiciousDelay: rl.SuspiciousDelay,
		MaxTracked: rl.MaxTracked, CleanupInterval: rl.CleanupInterval,
	}, clk)
	if err != nil {
		return nil, err
	}
	s.metrics.Registry.MustRegister(s.limiter)
	if rl.StateFile != "" {
		if err := s.importLimiterState(rl.StateFile); err != nil {
			return nil, err
		}
	}

	var keySource auth.KeySource
	if keySource, err = s.loadFleetSecret(); err != nil {
		return nil, fmt.Errorf("--fleet-secret-dir: %w", err)
	}
	// The exit margin's shares; the gossip hand-off takes half of the
	// exit's.
	s.budget = lifecycle.NewStopBudget(cfg.Drain.ExitMargin)
	clusterMetrics := cluster.NewMetrics()
	s.metrics.Registry.MustRegister(clusterMetrics)
	if cl := cfg.Cluster; cl.Listen != "" {
		if s.fleetKey == nil {
			return nil, fmt.Errorf("--cluster-listen: the fleet Secret in %s holds no %s; gossip is never sent unencrypted", cfg.FleetSecretDir, fleet.FleetKeyFile)
		}
		if s.fleetKeyFile, err = auth.NewSecretFile(filepath.Join(cfg.FleetSecretDir, fleet.FleetKeyFile), fleet.ParseFleetKey); err != nil {
			return nil, fmt.Errorf("--cluster-listen: %w", err)
		}
		if s.peer, err = cluster.New(cluster.Config{
			FleetKeySource: s.fleetKeyFile.Value,
			Listen:         cl.Listen, Advertise: cl.Advertise, Peers: cl.Peers, PeersFile: cl.PeersFile, FleetKey: s.fleetKey,
			SettleTimeout: cl.SettleTimeout, HandoffTimeout: s.budget.Exit / 2,
		}, s.limiter, clusterMetrics, log.WithName("cluster")); err != nil {
			return nil, err
		}
	}
	if cfg.InsecureNoAuth {
		// Logged at error level so that it stands out in any log pipeline.
		log.Error(nil, "AUTHENTICATION IS OFF (--insecure-no-auth): anyone who reaches this port can open sessions; use only on a local machine")
	} else {
		if s.keys, err = auth.NewKeyStore(cfg.APIKeysFile); err != nil {
			return nil, fmt.Errorf("--api-keys-file: %w", err)
		}
		opts := []auth.TokenOption{auth.WithDefaultTTL(cfg.ClientTokenTTL)}
		if s.tokenKeys != nil {
			opts = append(opts, auth.WithKeyRefresh(func() bool { return s.tokenKeys.Refresh(s.clock.Now(), refreshInterval) }))
		}
		tokens, err := auth.NewTokenIssuer(keySource, clk, opts...)
		if err != nil {
			return nil, err
		}
		s.authn = &auth.Authenticator{Keys: s.keys, Tokens: tokens, AllowAPIKeyInBrowser: cfg.AllowAPIKeyInBrowser}
	}

	for _, o := range opts {
		o(s)
	}
	if s.backend == nil {
		switch cfg.Backend {
		case config.BackendEcho:
			s.backend = echo.New(clk)
		case config.BackendOpenAI:
			if s.backend, err = openai.New(cfg.OpenAI, openai.Options{Clock: clk, Metrics: s.metrics, Log: log.WithName("openai")}); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("--backend %q is not available in this build", cfg.Backend)
		}
	}

	// Resume handles are sealed under a key derived from the fleet key,
	// so that every pod of the fleet opens them. Without a fleet Secret a
	// key of the process's own still lets a client resume on this
	// process, and nowhere else.
	resumeKey := s.fleetKey
	if resumeKey == nil {
		resumeKey = make([]byte, fleet.FleetKeyBytes)
		_, _ = rand.Read(resumeKey)
	}
	if s.sealer, err = resume.NewSealer(resumeKey); err != nil {
		return nil, err
	}

	s.sessions = session.NewRegistry(cfg.Sessions.Limit).
		WithCredentialLimits(cfg.Sessions.MaxPerAPIKey, cfg.Sessions.MaxPerClientIP)
	s.parker = &session.Parker{Registry: s.sessions}
	s.memory = memory.NewBudget(memory.BudgetFor(cfg.MemoryLimit), s.metrics)
	if s.memory.Limit() > 0 {
		log.Info("Memory budget", "limit", config.FormatBytes(cfg.MemoryLimit), "budget", config.FormatBytes(s.memory.Limit()),
			"sessionsItAdmits", s.memory.MaxSessions(), "perSessionPromise", config.FormatBytes(memory.Promised))
		if s.memory.MaxSessions() < cfg.Sessions.Limit {
			log.Info("The memory budget admits fewer sessions than --session-limit; more are refused with memory_limit",
				"sessionsItAdmits", s.memory.MaxSessions(), "sessionLimit", cfg.Sessions.Limit)
		}
	} else {
		log.Info("No memory limit known (--memory-limit, GOMEMLIMIT): what clients make the server hold is counted, never refused")
	}
	s.metrics.Admission.RegisterTokenUses(func() (int, int64) {
		if s.tokenUses == nil {
			return 0, 0
		}
		return s.tokenUses.Stats()
	})
	if s.keys != nil {
		s.tokenUses = auth.NewTokenUses(cfg.Sessions.MaxPerToken, clk)
		// A removed API key ends the sessions it opened, directly or
		// through the tokens it minted.
		s.keys.SetOnChange(s.revokeSessions)
	}
	d := cfg.Drain
	// Close handshakes, cutting the peers that ignore them, closing the
	// listeners and exiting all fit in the exit margin (s.budget, above).
	s.drainer = lifecycle.NewDrainer(lifecycle.Config{
		DrainTimeout: d.Timeout, PropagationDelay: d.PropagationDelay,
		NotifyWindow: d.NotifyWindow, ReconnectAfter: d.ReconnectAfter,
		CloseTimeout: s.budget.CloseHandshakes, AbortTimeout: s.budget.CutPeers,
	}, clk, s.sessions, s.metrics, log.WithName("drain"))
	return s, nil
}

// loadFleetSecret reads the mounted fleet Secret: the client-token signing
// keys (required), the admin token (without it the guarded admin endpoints
// are off) and the fleet key (checked when present, used by later fleet
// features). Without --fleet-secret-dir the process signs tokens with a key
// of its own.
func (s *Server) loadFleetSecret() (auth.KeySource, error) {
	dir := s.cfg.FleetSecretDir
	if dir == "" {
		s.log.Info("No --fleet-secret-dir: client tokens are signed with a key of this process and work only on it until it restarts; the admin endpoints that need the admin token are off")
		return auth.LocalKeyring(s.clock.Now())
	}
	var err error
	if s.tokenKeys, err = auth.NewSecretFile(filepath.Join(dir, fleet.TokenKeysFile), auth.ParseKeyring); err != nil {
		return nil, err
	}
	// Without an admin-token the guarded admin endpoints are off until one
	// appears (the operator repairs an incomplete Secret it owns).
	if s.adminToken, err = auth.NewOptionalSecretFile(filepath.Join(dir, fleet.AdminTokenFile), fleet.ParseAdminToken); err != nil {
		return nil, err
	}
	switch data, err := boundedfile.Read(filepath.Join(dir, fleet.FleetKeyFile), fleet.MaxFileSize); {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, err
	default:
		if s.fleetKey, err = fleet.ParseFleetKey(data); err != nil {
			return nil, err
		}
	}
	s.log.Info("Fleet Secret loaded", "dir", dir, "tokenKeyIDs", s.tokenKeys.Value().IDs(), "adminToken", s.adminToken.Value() != "")
	return s.tokenKeys, nil
}

// HTTP limits of the public and admin listeners (docs/operations.md).
const (
	// PublicReadHeaderTimeout closes a connection that has not sent its
	// request headers in this time (slowloris).
	PublicReadHeaderTimeout = 10 * time.Second
	// PublicReadTimeout bounds reading a whole request (a token mint's
	// body is at most 4 KiB).
	PublicReadTimeout = 30 * time.Second
	// PublicWriteTimeout bounds answering a request, plus the rate
	// limiter's delay for a suspicious client.
	PublicWriteTimeout = 30 * time.Second
	// PublicIdleTimeout closes a keep-alive connection idle this long.
	PublicIdleTimeout = 30 * time.Second
	// PublicMaxHeaderBytes bounds a request's headers: credentials and
	// subprotocol lists fit in 8 lines of 4 KiB (server/auth).
	PublicMaxHeaderBytes = 32 << 10
	// AdminMaxHeaderBytes bounds the admin port's: an admin token and a
	// few short headers.
	AdminMaxHeaderBytes = 16 << 10
)

// httpLimits are the public listener's limits.
type httpLimits struct {
	readHeader, read, write, idle time.Duration
	maxHeaderBytes                int
}

var defaultHTTPLimits = httpLimits{
	readHeader: PublicReadHeaderTimeout, read: PublicReadTimeout, write: PublicWriteTimeout,
	idle: PublicIdleTimeout, maxHeaderBytes: PublicMaxHeaderBytes,
}

// revokeSessions ends, with credential_revoked, every session opened with
// an API key the key file no longer holds, or with a client token such a
// key minted. It runs when the key file changed.
func (s *Server) revokeSessions(keys *auth.KeySet) {
	ended := map[string]int{}
	for _, sess := range s.sessions.Snapshot() {
		if id := sess.Identity().APIKeyID; id != "" && !keys.HasID(id) {
			sess.Fail(protocol.Fatal(protocol.CodeCredentialRevoked, protocol.ClosePolicyViolation,
				"the API key this session was opened with was revoked"))
			ended[id]++
		}
	}
	for id, n := range ended {
		s.log.Info("Ended the sessions of a revoked API key", "apiKey", id, "sessions", n)
	}
}

// revoked reports whether the API key a session was admitted with (or
// the key that minted its client token) is gone from the key file. The
// acceptor asks once the session is registered: a key file change that
// revoked the key while the session was being admitted looked at the
// registry before the session was in it.
func (s *Server) revoked(id session.Identity) bool {
	return s.keys != nil && id.APIKeyID != "" && !s.keys.Keys().HasID(id.APIKeyID)
}

// Metrics exposes the server's metrics (tests read them).
func (s *Server) Metrics() *metrics.Server { return s.metrics }

// Sessions exposes the session registry (tests check it empties).
func (s *Server) Sessions() *session.Registry { return s.sessions }

// Drainer is the server's drain, for lifecycle.NotifySignals.
func (s *Server) Drainer() *lifecycle.Drainer { return s.drainer }

// BeginDrain starts termination, as SIGTERM or the preStop hook does.
func (s *Server) BeginDrain() { s.drainer.Begin() }

// ForceDrain skips the drain's waits, as a second signal does.
func (s *Server) ForceDrain() { s.drainer.Force() }

// ListenAndServe opens the configured listeners, logs where it listens and
// serves on them until the stop sequence is complete.
func (s *Server) ListenAndServe(ctx context.Context) error {
	public, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", s.cfg.Listen, err)
	}
	adminLn, err := net.Listen("tcp", s.cfg.AdminListen)
	if err != nil {
		public.Close()
		return fmt.Errorf("--admin-listen %s: %w", s.cfg.AdminListen, err)
	}
	s.log.Info("listening", "public", public.Addr().String(), "admin", adminLn.Addr().String())
	return s.Serve(ctx, public, adminLn)
}

// Serve runs the server on the given listeners until the stop sequence is
// complete (or ctx is cancelled, which forces the drain); it takes ownership
// of the listeners. server/lifecycle owns the order and every budget.
func (s *Server) Serve(ctx context.Context, public, adminLn net.Listener) error {
	return s.Process(public, adminLn).Run(ctx)
}

// Process assembles the lifecycle of this server on the given listeners.
func (s *Server) Process(public, adminLn net.Listener) *lifecycle.Process {
	adminOpts := admin.Options{
		DebugEndpoints: s.cfg.DebugEndpoints,
		Drainer:        s.drainer, Sessions: s.sessions, Metrics: s.metrics,
		Backend: s.backend.Name(), SessionLimit: s.cfg.Sessions.Limit, Clock: s.clock, Started: s.started,
		Log: s.log.WithName("admin"),
	}
	if s.adminToken != nil {
		adminOpts.AdminToken = s.adminToken
		adminOpts.RefreshAdminToken = func() bool { return s.adminToken.Refresh(s.clock.Now(), refreshInterval) }
	}
	// The parker stops with the loops, after the drain: every session
	// has ended by then.
	loops := []func(context.Context) error{s.limiter.Run, s.parker.Run}
	if s.peer != nil {
		// The loops stop after the drain; the peer then hands the state
		// on and leaves within half the exit budget.
		loops = append(loops, s.peer.Run, func(ctx context.Context) error {
			return s.fleetKeyFile.Watch(ctx, s.cfg.SecretPollInterval, s.clock, s.log.WithName("fleet-key"))
		})
		adminOpts.Cluster = s.peer
	}
	if s.keys != nil {
		loops = append(loops, func(ctx context.Context) error {
			return s.keys.Watch(ctx, s.cfg.SecretPollInterval, s.clock, s.log.WithName("keys"))
		})
	}
	if s.tokenKeys != nil {
		loops = append(loops, func(ctx context.Context) error {
			return s.tokenKeys.Watch(ctx, s.cfg.SecretPollInterval, s.clock, s.log.WithName("token-keys"))
		})
	}
	if s.adminToken != nil {
		loops = append(loops, func(ctx context.Context) error {
			return s.adminToken.Watch(ctx, s.cfg.SecretPollInterval, s.clock, s.log.WithName("admin-token"))
		})
	}
	if r, ok := s.backend.(backend.Runner); ok {
		loops = append(loops, r.Run)
	}
	var afterDrain func() error
	if s.cfg.RateLimit.StateFile != "" {
		afterDrain = func() error { return s.exportLimiterState(s.cfg.RateLimit.StateFile) }
	}
	return &lifecycle.Process{
		Drainer: s.drainer,
		Budget:  s.budget,
		Public: lifecycle.Listener{Listener: public, Server: &http.Server{
			Handler: s.publicHandler(), ErrorLog: httpErrorLog(s.log),
			// Ordinary requests (the demo page, a token mint, an upgrade
			// before it is one) are bounded; an upgraded session is not:
			// its connection is taken over, deadlines cleared.
			ReadHeaderTimeout: s.httpLimits.readHeader,
			ReadTimeout:       s.httpLimits.read,
			// A suspicious client waits out its delay before its answer.
			WriteTimeout:   s.httpLimits.write + s.cfg.RateLimit.SuspiciousDelay,
			IdleTimeout:    s.httpLimits.idle,
			MaxHeaderBytes: s.httpLimits.maxHeaderBytes,
		}},
		Admin: lifecycle.Listener{Listener: adminLn, Server: &http.Server{
			Handler: admin.NewHandler(adminOpts), ErrorLog: httpErrorLog(s.log),
			// No write timeout: /drain answers after the propagation
			// delay, and a profile takes the seconds it is asked for.
			ReadHeaderTimeout: PublicReadHeaderTimeout,
			ReadTimeout:       PublicReadHeaderTimeout,
			IdleTimeout:       PublicIdleTimeout,
			MaxHeaderBytes:    AdminMaxHeaderBytes,
		}},
		Loops:      loops,
		Handlers:   &s.handlers,
		AfterDrain: afterDrain,
		Log:        s.log.WithName("lifecycle"),
	}
}

func (s *Server) importLimiterState(path string) error {
	data, err := boundedfile.Read(path, maxLimiterStateBytes(s.cfg.RateLimit.MaxTracked))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		// Too large, or not a file: as with a bad hand-off, the limiter
		// starts empty rather than the server not at all, and nothing of
		// it is read into memory.
		s.log.Error(err, "ignoring the rate limiter state file", "path", path)
		return nil
	}
	var st ratelimit.State
	if err := json.Unmarshal(data, &st); err != nil {
		// A bad hand-off must not keep the server from starting: the
		// limiter starts empty, which is the safe, pre-hand-off default.
		s.log.Error(err, "ignoring unreadable rate limiter state", "path", path)
		return nil
	}
	if s.cfg.Cluster.Listen != "" {
		// With gossip the peers hold this replica's earlier failure
		// counts under its previous origin: taking them from the file too
		// would count them twice. Blocks and suspicion merge by maximum
		// and are taken.
		st.ExportedAt = time.Time{}
	}
	n, err := s.limiter.Import(st)
	if err != nil {
		// Readable entries are kept; the rest are named by the error.
		s.log.Error(err, "rate limiter state entries skipped", "path", path)
	}
	s.log.Info("rate limiter state imported", "path", path, "entries", n)
	return nil
}

// maxLimiterStateBytes bounds the rate limiter's state file: an exported
// entry takes about 150 bytes of JSON, so a file of the tracker's size fits
// in 256 bytes an entry, between 1 MiB and 64 MiB.
func maxLimiterStateBytes(maxTracked int) int64 {
	return min(max(int64(maxTracked)*256, 1<<20), 64<<20)
}

func (s *Server) exportLimiterState(path string) error {
	// The state replaces a regular file, or goes where none is; never a
	// device or a pipe that --ratelimit-state-file names by mistake (a
	// rename over /dev/zero would replace the device).
	if info, err := os.Lstat(path); err == nil && !info.Mode().IsRegular() {
		return fmt.Errorf("writing rate limiter state: --ratelimit-state-file %s is not a regular file (%s); the state is not written", path, info.Mode().Type())
	}
	data, err := json.Marshal(s.limiter.Export())
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("writing rate limiter state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing rate limiter state: %w", err)
	}
	s.log.Info("rate limiter state handed on", "path", path)
	return nil
}
