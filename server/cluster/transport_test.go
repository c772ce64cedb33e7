package cluster

import (
	"errors"
	"io"
	"log"
	"net"
	"os"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// TestHandoffBoundsStreams: a stream to a peer that never answers, opened
// before the hand-off with memberlist's long timeout, ends at the hand-off's
// deadline; and no stream opens after it.
func TestHandoffBoundsStreams(t *testing.T) {
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := silent.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()

	host, port, err := splitHostPort(freePort(t))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := newBoundedTransport(host, port, log.New(io.Discard, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Shutdown()
	conn, err := tr.DialAddressTimeout(memberlist.Address{Addr: silent.Addr().String()}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if c := <-accepted; c != nil {
		defer c.Close()
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second)) // as memberlist does
	start := time.Now()
	tr.bound(start.Add(200 * time.Millisecond))
	_, err = conn.Read(make([]byte, 1))
	if took := time.Since(start); !errors.Is(err, os.ErrDeadlineExceeded) || took > 2*time.Second {
		t.Errorf("read from a silent peer after the bound: %v after %v, want a deadline error at about 200ms", err, took)
	}
	time.Sleep(250 * time.Millisecond)
	if _, err := tr.DialAddressTimeout(memberlist.Address{Addr: silent.Addr().String()}, 10*time.Second); !errors.Is(err, errHandoffBudget) {
		t.Errorf("a dial after the deadline: %v, want %v", err, errHandoffBudget)
	}
}
