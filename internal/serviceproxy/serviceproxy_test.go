package serviceproxy

import (
	"bufio"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echoServer answers each line with itself until the connection closes.
func echoServer(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln
}

func roundTrip(t *testing.T, c net.Conn, line string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		t.Fatal(err)
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || got != line+"\n" {
		t.Fatalf("round trip of %q: %q, %v", line, got, err)
	}
}

// TestNewConnectionsGoWherePickSays: a new connection goes to the endpoint
// picked when it arrives, one already open stays on its endpoint, and no
// endpoint refuses it; Close ends every connection and goroutine.
func TestNewConnectionsGoWherePickSays(t *testing.T) {
	a, b := echoServer(t), echoServer(t)
	defer a.Close()
	defer b.Close()
	var target atomic.Value
	target.Store(a.Addr().String())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := Start(ln, func() string { return target.Load().(string) })
	defer p.Close()

	first, err := net.Dial("tcp", p.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	roundTrip(t, first, "to a")
	target.Store(b.Addr().String())
	a.Close() // a takes no new connection; the open one stays
	roundTrip(t, first, "still to a")
	second, err := net.Dial("tcp", p.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	roundTrip(t, second, "to b")

	target.Store("")
	refused, err := net.Dial("tcp", p.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer refused.Close()
	_ = refused.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := refused.Read(make([]byte, 1)); err == nil {
		t.Fatalf("a connection with no endpoint read %d bytes, want it closed", n)
	}
	p.Close()
	_ = first.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := first.Read(make([]byte, 1)); err == nil {
		t.Fatal("Close left a connection open")
	}
}
