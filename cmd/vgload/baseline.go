package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// The baseline server is the least a WebSocket echo can do: it returns every
// message as it came, on the same library and settings as the gateway
// (coder/websocket, no compression). Measured in the same run with the same
// load, its round trip is what loopback, the kernel and the client cost; the
// gateway's round trip less it is what the gateway adds.

func cmdBaseline(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("baseline-server", stderr)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on (loopback unless --allow-remote)")
	allowRemote := fs.Bool("allow-remote", false, "allow a non-loopback listen address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := checkTarget("ws://"+*listen, *allowRemote); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	// The same "listening" line the voice server logs, so scripts read both alike.
	line, _ := json.Marshal(map[string]string{"msg": "listening", "public": ln.Addr().String()})
	fmt.Fprintln(stderr, string(line))
	return serveBaseline(ctx, ln)
}

// serveBaseline echoes on ln until ctx ends, then closes every connection
// with 1001 and returns once all of them are done.
func serveBaseline(ctx context.Context, ln net.Listener) error {
	var conns sync.WaitGroup
	var mu sync.Mutex
	live := map[*websocket.Conn]struct{}{}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true, CompressionMode: websocket.CompressionDisabled})
		if err != nil {
			return
		}
		c.SetReadLimit(1 << 20)
		mu.Lock()
		if ctx.Err() != nil {
			mu.Unlock()
			c.Close(websocket.StatusGoingAway, "shutting down")
			return
		}
		live[c] = struct{}{}
		conns.Add(1)
		mu.Unlock()
		defer func() {
			mu.Lock()
			delete(live, c)
			mu.Unlock()
			conns.Done()
		}()
		echo(ctx, c)
	})
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	<-ctx.Done()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(shutdownCtx) // closes the listener; hijacked connections are ours
	mu.Lock()
	for c := range live {
		c.CloseNow()
	}
	mu.Unlock()
	conns.Wait()
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

// echo returns every message on c until the connection ends.
func echo(ctx context.Context, c *websocket.Conn) {
	defer c.CloseNow()
	var buf bytes.Buffer // reused: the baseline allocates nothing per message
	for {
		typ, r, err := c.Reader(ctx)
		if err != nil {
			return
		}
		buf.Reset()
		if _, err := buf.ReadFrom(r); err != nil {
			return
		}
		if err := c.Write(ctx, typ, buf.Bytes()); err != nil {
			return
		}
	}
}
