package session

import (
	"context"
	"errors"
	"net/netip"
	"sync"
)

// ErrLimit means the per-process session cap is reached.
var ErrLimit = errors.New("session limit reached")

// ErrClosed means the registry no longer takes sessions (the server drains).
var ErrClosed = errors.New("server is draining")

// ErrAPIKeyLimit and ErrClientIPLimit mean the session's API key, or its
// client address (an IPv6 client's /64), holds as many sessions as the
// registry allows it.
var (
	ErrAPIKeyLimit   = errors.New("API key session limit reached")
	ErrClientIPLimit = errors.New("client address session limit reached")
)

// Registry is the set of live sessions. It is bounded by the session limit,
// and registering returns the function that unregisters, so a session cannot
// be added without the code path that removes it.
type Registry struct {
	mu       sync.Mutex
	sessions map[string]*Session
	limit    int
	closed   bool
	// perAPIKey and perClientNet cap the sessions of one API key and of
	// one client network (0: no cap); byAPIKey and byClientNet count the
	// live ones, so they hold at most one entry per live session.
	perAPIKey, perClientNet int
	byAPIKey                map[string]int
	byClientNet             map[netip.Prefix]int
	// shrunk is closed and replaced whenever a session leaves, waking Wait.
	shrunk chan struct{}
}

// NewRegistry returns a registry that holds at most limit sessions.
func NewRegistry(limit int) *Registry {
	return &Registry{
		sessions: make(map[string]*Session), limit: limit, shrunk: make(chan struct{}),
		byAPIKey: map[string]int{}, byClientNet: map[netip.Prefix]int{},
	}
}

// WithCredentialLimits caps the concurrent sessions of one API key (its own
// and those of the client tokens it minted) and of one client network
// (Identity.ClientNet); 0 means no cap. Call it before the registry is used.
func (r *Registry) WithCredentialLimits(perAPIKey, perClientNet int) *Registry {
	r.perAPIKey, r.perClientNet = perAPIKey, perClientNet
	return r
}

// Add registers s. The returned remove function must be called when the
// session has ended; it is safe to call more than once.
func (r *Registry) Add(s *Session) (remove func(), err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.admitsLocked(s); err != nil {
		return nil, err
	}
	id := s.opts.Identity
	r.sessions[s.registryKey()] = s
	if id.APIKeyID != "" {
		r.byAPIKey[id.APIKeyID]++
	}
	if id.ClientNet.IsValid() {
		r.byClientNet[id.ClientNet]++
	}
	var once sync.Once
	return func() { once.Do(func() { r.remove(s) }) }, nil
}

// admits reports the error Add would return for s now, without adding it.
func (r *Registry) admits(s *Session) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.admitsLocked(s)
}

func (r *Registry) admitsLocked(s *Session) error {
	if r.closed {
		return ErrClosed
	}
	if len(r.sessions) >= r.limit {
		return ErrLimit
	}
	id := s.opts.Identity
	if id.APIKeyID != "" && r.perAPIKey > 0 && r.byAPIKey[id.APIKeyID] >= r.perAPIKey {
		return ErrAPIKeyLimit
	}
	if id.ClientNet.IsValid() && r.perClientNet > 0 && r.byClientNet[id.ClientNet] >= r.perClientNet {
		return ErrClientIPLimit
	}
	return nil
}

func (r *Registry) remove(s *Session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.sessions, s.registryKey())
	id := s.opts.Identity
	if id.APIKeyID != "" {
		if r.byAPIKey[id.APIKeyID]--; r.byAPIKey[id.APIKeyID] <= 0 {
			delete(r.byAPIKey, id.APIKeyID)
		}
	}
	if id.ClientNet.IsValid() {
		if r.byClientNet[id.ClientNet]--; r.byClientNet[id.ClientNet] <= 0 {
			delete(r.byClientNet, id.ClientNet)
		}
	}
	close(r.shrunk)
	r.shrunk = make(chan struct{})
}

// Close stops the registry from taking new sessions; live ones go on.
func (r *Registry) Close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
}

// Len is the number of live sessions.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sessions)
}

// Snapshot returns the live sessions at this moment, for drain and status.
func (r *Registry) Snapshot() []*Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*Session, 0, len(r.sessions))
	for _, s := range r.sessions {
		out = append(out, s)
	}
	return out
}

// Wait blocks until no session is left or ctx is done.
func (r *Registry) Wait(ctx context.Context) error {
	for {
		r.mu.Lock()
		n, shrunk := len(r.sessions), r.shrunk
		r.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-shrunk:
		}
	}
}

// registryKey is the session's key in the registry: its own key, which
// stays unique when a resumed session takes another's id.
func (s *Session) registryKey() string {
	if s.key != "" {
		return s.key
	}
	return s.id
}

// appendWaiting appends the sessions whose reader waits for the client
// outside the WebSocket library (the ones a Parker may ask to park).
func (r *Registry) appendWaiting(dst []*Session) []*Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.sessions {
		if s.park.state.Load() == readerWaiting {
			dst = append(dst, s)
		}
	}
	return dst
}
