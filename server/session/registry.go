package session

import (
	"context"
	"errors"
	"sync"
)

// ErrLimit means the per-process session cap is reached.
var ErrLimit = errors.New("session limit reached")

// ErrClosed means the registry no longer takes sessions (the server drains).
var ErrClosed = errors.New("server is draining")

// Registry is the set of live sessions. It is bounded by the session limit,
// and registering returns the function that unregisters, so a session cannot
// be added without the code path that removes it.
type Registry struct {
	mu       sync.Mutex
	sessions map[string]*Session
	limit    int
	closed   bool
	// shrunk is closed and replaced whenever a session leaves, waking Wait.
	shrunk chan struct{}
}

// NewRegistry returns a registry that holds at most limit sessions.
func NewRegistry(limit int) *Registry {
	return &Registry{sessions: make(map[string]*Session), limit: limit, shrunk: make(chan struct{})}
}

// Add registers s. The returned remove function must be called when the
// session has ended; it is safe to call more than once.
func (r *Registry) Add(s *Session) (remove func(), err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, ErrClosed
	}
	if len(r.sessions) >= r.limit {
		return nil, ErrLimit
	}
	r.sessions[s.id] = s
	var once sync.Once
	return func() { once.Do(func() { r.remove(s.id) }) }, nil
}

func (r *Registry) remove(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.sessions, id)
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
