package session

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"time"
)

// sessionBufferSize is the read and write buffer of a hijacked session
// connection. net/http gives each hijacked connection 4 KiB of each, which
// is a large part of what an idle session costs; audio messages are
// 1–2 KiB, so 2 KiB buffers take one in one system call either way.
const sessionBufferSize = 2 << 10

// smallBufferWriter hands the WebSocket library a hijacked connection with
// smaller buffers than net/http's. It only saves memory because the session
// runs outside the handler: a running handler keeps net/http's connection,
// and its buffers, alive.
// It also keeps the raw connection, so that a session whose close
// handshake hangs can be cut at the end of the drain.
type smallBufferWriter struct {
	http.ResponseWriter
	conn net.Conn
	// out is what the library writes through (see coalescer).
	out *coalescer
}

func (w *smallBufferWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.conn = conn
	// net/http sets deadlines on the connection for its read and write
	// timeouts, which bound ordinary requests; left in place they would
	// end the session when they pass. net/http clears them when it hands
	// the connection over, and so do we, rather than depend on it: the
	// session bounds its writes itself (--write-timeout) and its silence
	// with the idle timeout.
	if err := conn.SetDeadline(time.Time{}); err != nil {
		conn.Close()
		return nil, nil, err
	}
	if err := brw.Writer.Flush(); err != nil {
		conn.Close()
		return nil, nil, err
	}
	// Bytes the server already read past the request (a client may send
	// its first frame right behind the handshake) must not be lost. They
	// go into the new reader's buffer, which is where the WebSocket
	// library looks for them.
	reader := bufio.NewReaderSize(conn, sessionBufferSize)
	if n := brw.Reader.Buffered(); n > 0 {
		early, _ := brw.Reader.Peek(n)
		reader = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(early)), conn), max(n, sessionBufferSize))
		if _, err := reader.Peek(n); err != nil {
			conn.Close()
			return nil, nil, err
		}
	}
	w.out = newCoalescer(conn)
	return conn, bufio.NewReadWriter(reader, bufio.NewWriterSize(w.out, sessionBufferSize)), nil
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *smallBufferWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
