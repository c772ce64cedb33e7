package testenv

import (
	"net/http"
	"regexp"
	"sync"
)

// RequestLog records what a client asks of the API server that matters
// for the operator's cost: every request that is not a read (a write), and
// every GET of one Secret (Secrets are not cached). Install it with
// rest.Config.WrapTransport = log.Wrap.
type RequestLog struct {
	mu          sync.Mutex
	writes      []string
	secretReads []string
}

// secretPath matches the path of a GET of one Secret.
var secretPath = regexp.MustCompile(`^/api/v1/namespaces/[^/]+/secrets/[^/]+$`)

// Wrap records the requests that go through rt.
func (l *RequestLog) Wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
		switch {
		case req.Method != http.MethodGet && req.Method != http.MethodHead:
			l.mu.Lock()
			l.writes = append(l.writes, req.Method+" "+req.URL.Path)
			l.mu.Unlock()
		case secretPath.MatchString(req.URL.Path):
			l.mu.Lock()
			l.secretReads = append(l.secretReads, req.URL.Path)
			l.mu.Unlock()
		}
		return rt.RoundTrip(req)
	})
}

// Reset forgets what was recorded.
func (l *RequestLog) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writes, l.secretReads = nil, nil
}

// Writes lists the writes since the last Reset, as "METHOD path".
func (l *RequestLog) Writes() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.writes...)
}

// SecretReads lists the paths of the Secret GETs since the last Reset.
func (l *RequestLog) SecretReads() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.secretReads...)
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }
