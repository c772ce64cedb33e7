package session

import (
	"bytes"
	"net"
	"testing"
)

// countingConn records every write that reaches the connection.
type countingConn struct {
	net.Conn
	writes [][]byte
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

// TestCoalescerOneWritePerBatch: what is flushed while a batch is held
// reaches the connection in one write, in order; outside a batch each
// flush is a write of its own.
func TestCoalescerOneWritePerBatch(t *testing.T) {
	conn := &countingConn{}
	c := newCoalescer(conn)
	c.hold()
	for _, s := range []string{"one", "two", "three"} {
		if n, err := c.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	if len(conn.writes) != 0 {
		t.Fatalf("%d writes reached the connection while the batch was held", len(conn.writes))
	}
	if err := c.send(); err != nil {
		t.Fatal(err)
	}
	if len(conn.writes) != 1 || string(conn.writes[0]) != "onetwothree" {
		t.Fatalf("writes = %q, want one write of the whole batch", conn.writes)
	}
	if c.held != nil {
		t.Error("the batch's buffer is kept after send")
	}
	_, _ = c.Write([]byte("four"))
	_, _ = c.Write([]byte("five"))
	if len(conn.writes) != 3 {
		t.Fatalf("writes = %q: outside a batch each flush is its own write", conn.writes)
	}
	if err := c.send(); err != nil || len(conn.writes) != 3 {
		t.Fatalf("send without a batch wrote %q, %v", conn.writes[3:], err)
	}
}
