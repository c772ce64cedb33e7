package cluster

import (
	"errors"
	"log"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// boundedTransport is memberlist's own TCP/UDP transport with one addition:
// a deadline that, once set, bounds every stream this replica opened, those
// in flight included. The hand-off sets it to the end of its budget, so a
// peer that stalls a push/pull cannot hold the exit, while ordinary
// push/pulls keep memberlist's generous TCP timeout for large states.
type boundedTransport struct {
	*memberlist.NetTransport

	deadline atomic.Int64 // Unix nanoseconds; 0 until the hand-off
	mu       sync.Mutex
	open     map[*boundedConn]struct{}
}

var errHandoffBudget = errors.New("the hand-off's budget is spent")

func newBoundedTransport(host string, port int, logger *log.Logger) (*boundedTransport, error) {
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{host}, BindPort: port, Logger: logger})
	if err != nil {
		return nil, err
	}
	return &boundedTransport{NetTransport: nt, open: map[*boundedConn]struct{}{}}, nil
}

// bound sets the deadline and applies it to the streams open now.
func (t *boundedTransport) bound(deadline time.Time) {
	t.deadline.Store(deadline.UnixNano())
	t.mu.Lock()
	defer t.mu.Unlock()
	for c := range t.open {
		_ = c.Conn.SetDeadline(deadline)
	}
}

func (t *boundedTransport) limit() (time.Time, bool) {
	d := t.deadline.Load()
	return time.Unix(0, d), d != 0
}

// DialAddressTimeout dials within the deadline and tracks the stream.
func (t *boundedTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if d, ok := t.limit(); ok {
		if timeout = min(timeout, time.Until(d)); timeout <= 0 {
			return nil, errHandoffBudget
		}
	}
	conn, err := t.NetTransport.DialAddressTimeout(a, timeout)
	if err != nil {
		return nil, err
	}
	c := &boundedConn{Conn: conn, t: t}
	t.mu.Lock()
	t.open[c] = struct{}{}
	t.mu.Unlock()
	if d, ok := t.limit(); ok {
		_ = conn.SetDeadline(d)
	}
	return c, nil
}

// DialTimeout is DialAddressTimeout for an address without a node name.
func (t *boundedTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

// boundedConn never takes a deadline later than its transport's.
type boundedConn struct {
	net.Conn
	t *boundedTransport
}

func (c *boundedConn) SetDeadline(d time.Time) error {
	if limit, ok := c.t.limit(); ok && (d.IsZero() || limit.Before(d)) {
		d = limit
	}
	return c.Conn.SetDeadline(d)
}

func (c *boundedConn) Close() error {
	c.t.mu.Lock()
	delete(c.t.open, c)
	c.t.mu.Unlock()
	return c.Conn.Close()
}
