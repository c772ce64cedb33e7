// Package serviceproxy stands in for a Kubernetes Service on loopback: a
// TCP proxy that sends each new connection to the address its pick function
// names (a ready endpoint), so that a draining server gets no new
// connection while the connections already open stay where they are. The
// demo (make demo-drain) and the browser tests move calls through it.
package serviceproxy

import (
	"io"
	"net"
	"sync"
	"time"
)

// dialTimeout bounds the dial of an endpoint.
const dialTimeout = 5 * time.Second

// Proxy is a running proxy. Close stops it: it closes the listener and
// every connection, and waits for its goroutines.
type Proxy struct {
	ln   net.Listener
	pick func() string
	wg   sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// Start serves ln until Close. pick names the endpoint of a new
// connection; "" refuses it, as a Service without ready endpoints does.
func Start(ln net.Listener, pick func() string) *Proxy {
	p := &Proxy{ln: ln, pick: pick, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	return p
}

// Addr is where the proxy listens.
func (p *Proxy) Addr() net.Addr { return p.ln.Addr() }

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			c.Close()
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.untrack(c)
			p.forward(c)
		}()
	}
}

// track registers a connection for Close; false once the proxy is closed.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *Proxy) forward(client net.Conn) {
	addr := p.pick()
	if addr == "" {
		return
	}
	upstream, err := net.DialTimeout("tcp", addr, dialTimeout)
	if err != nil {
		return
	}
	if !p.track(upstream) {
		upstream.Close()
		return
	}
	defer p.untrack(upstream)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(upstream, client)
	go pipe(client, upstream)
	<-done
	// Either side is gone: close both, which ends the other copy.
	client.Close()
	upstream.Close()
	<-done
}

// Close stops the proxy and waits for it; it is safe to call more than once.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}
