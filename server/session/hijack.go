package session

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/voicegateway/voicegateway/server/internal/msgbuf"
)

// sessionBufferSize is the read buffer of a hijacked session connection
// while its reader is not parked. net/http gives each hijacked connection
// 4 KiB, which was a large part of what an idle session cost; audio
// messages are 1–2 KiB, so a 2 KiB buffer takes one in one system call
// either way. Writes need no buffer of that size (frameWriter).
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
	// read is what the WebSocket library reads the connection through,
	// and br its buffer: a parked session (park.go) swaps the buffer for
	// a small one while it waits.
	read *readConn
	br   *bufio.Reader
	// write is what the library's write buffer flushes to: the session's
	// writer batches through it.
	write *frameWriter
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
	rc := w.read
	if rc == nil {
		rc = &readConn{}
	}
	rc.Conn = conn
	reader := bufio.NewReaderSize(rc, sessionBufferSize)
	if n := brw.Reader.Buffered(); n > 0 {
		early, _ := brw.Reader.Peek(n)
		rc.early.Store(true)
		reader = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(early)), rc), max(n, sessionBufferSize))
		if _, err := reader.Peek(n); err != nil {
			conn.Close()
			return nil, nil, err
		}
	}
	w.read, w.br, rc.br = rc, reader, reader
	w.write = &frameWriter{conn: conn}
	return rc, bufio.NewReadWriter(reader, bufio.NewWriterSize(w.write, frameHeadSize)), nil
}

// frameHeadSize is the WebSocket library's write buffer: enough for the
// longest frame header a server writes (10 bytes) and a little payload.
const frameHeadSize = 16

// frameWriter is what the library's write buffer flushes to. The library
// writes each frame as its header and payload into the buffer and flushes
// at the frame's end; with a 16-byte buffer a longer frame arrives here as
// its first 16 bytes and then the rest. frameWriter holds the first part
// (the frame's header says more is coming) and sends it with the rest in
// one writev: one system call per frame, as a buffer the size of a frame
// would give, without a 2 KiB buffer per connection that an idle session
// holds for nothing (and without copying the payload into it). A write
// that is a whole frame, or that it cannot read as a frame's start, goes
// out as it is; held bytes always go out with the next write, which the
// library makes before its frame is done.
//
// Between beginBatch and endBatch (the session's writer sending several
// queued messages, e.g. a response's seven closing events) it also keeps
// the data frames and sends them with one system call at endBatch: a
// write costs the same whether it carries one frame or twelve. Frames
// come here whole and in the library's order (the library writes each
// under its frame lock), and every write goes through mu, so bytes leave
// in exactly the order they came, whichever goroutine flushes them. A
// control frame (the library's pong or close, from its reader) is never
// kept: it sends what is kept and then itself at once, so a close echo
// is on the wire before the library closes the connection after it.
type frameWriter struct {
	conn net.Conn

	mu   sync.Mutex
	head [frameHeadSize]byte
	held int
	// batching: data frames are kept in kept until endBatch.
	batching bool
	kept     *[]byte
	// rest is how many bytes of the frame being written are still to come
	// (0 at a frame's first byte); control says that frame is one.
	rest    uint64
	control bool
	// lost: a write was not where a frame's bytes were expected to be, so
	// frame boundaries are unknown; nothing is kept until the next batch.
	lost bool
	// vec and bufs are the writev's, kept to write without allocating.
	vec  [2][]byte
	bufs net.Buffers
}

// maxKeptBytes bounds what a batch keeps before writing: a large message
// goes out with what is kept in one writev rather than being copied.
const maxKeptBytes = msgbuf.Small

func (w *frameWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.track(p)
	if w.batching && !w.control && !w.lost && w.held == 0 {
		if w.kept == nil {
			w.kept = msgbuf.Get(maxKeptBytes)
		}
		if len(*w.kept)+len(p) <= maxKeptBytes {
			*w.kept = append(*w.kept, p...)
			return len(p), nil
		}
		// Too large to copy: what is kept and p in one writev.
		err := w.writev(*w.kept, p)
		*w.kept = (*w.kept)[:0]
		if err != nil {
			return 0, err
		}
		return len(p), nil
	}
	if err := w.sendKept(); err != nil {
		return 0, err
	}
	if w.held == 0 {
		if len(p) <= len(w.head) && frameContinues(p) {
			w.held = copy(w.head[:], p)
			return len(p), nil
		}
		return w.conn.Write(p)
	}
	err := w.writev(w.head[:w.held], p)
	w.held = 0
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// track follows frame boundaries: at a frame's first byte it reads the
// header (the library's first flush of a frame holds all of it: the
// buffer is 16 bytes, a server's header at most 10).
func (w *frameWriter) track(p []byte) {
	if w.lost {
		return
	}
	if w.rest == 0 {
		size, length, ok := frameHeader(p)
		if !ok || length+uint64(size) < uint64(len(p)) {
			w.lost = true
			return
		}
		w.control = p[0]&0x08 != 0 // opcodes 0x8 to 0xF
		w.rest = length + uint64(size) - uint64(len(p))
		return
	}
	if uint64(len(p)) > w.rest {
		w.lost = true
		return
	}
	w.rest -= uint64(len(p))
}

// beginBatch starts keeping data frames.
func (w *frameWriter) beginBatch() {
	w.mu.Lock()
	w.batching = true
	w.mu.Unlock()
}

// endBatch stops keeping and sends what was kept in one system call,
// within the write deadline the caller set.
func (w *frameWriter) endBatch() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.batching = false
	if w.held == 0 {
		// The writer's frames are done and no other is half written:
		// a frame boundary, where what was lost is found again.
		w.rest, w.lost = 0, false
	}
	err := w.sendKept()
	if w.kept != nil {
		msgbuf.Put(w.kept)
		w.kept = nil
	}
	return err
}

// sendKept writes what a batch kept; mu is held.
func (w *frameWriter) sendKept() error {
	if w.kept == nil || len(*w.kept) == 0 {
		return nil
	}
	_, err := w.conn.Write(*w.kept)
	*w.kept = (*w.kept)[:0]
	return err
}

// writev writes a then b with one system call; mu is held.
func (w *frameWriter) writev(a, b []byte) error {
	w.vec = [2][]byte{a, b}
	w.bufs = w.vec[:]
	_, err := w.bufs.WriteTo(w.conn)
	w.vec, w.bufs = [2][]byte{}, nil
	return err
}

// frameContinues reports whether p starts with a WebSocket frame header
// that announces more bytes than p holds.
func frameContinues(p []byte) bool {
	size, length, ok := frameHeader(p)
	return ok && length > uint64(len(p)-size)
}

// frameHeader reads the header p starts with: its size in bytes (with the
// mask key of a client's frame) and the payload length it announces; ok is
// false when p is too short to hold it.
func frameHeader(p []byte) (size int, length uint64, ok bool) {
	if len(p) < 2 {
		return 0, 0, false
	}
	size, length = 2, uint64(p[1]&0x7f)
	switch length {
	case 126:
		size = 4
	case 127:
		size = 10
	}
	if len(p) < size {
		return 0, 0, false
	}
	switch size {
	case 4:
		length = uint64(binary.BigEndian.Uint16(p[2:4]))
	case 10:
		length = binary.BigEndian.Uint64(p[2:10])
	}
	if p[1]&0x80 != 0 {
		size += 4 // masked (a client's frame; a server writes none)
	}
	if len(p) < size {
		return 0, 0, false
	}
	return size, length, true
}

// readConn is the hijacked connection as the WebSocket library sees it.
// It notes what a parked-to-be reader must know about the last read
// (park.go): whether the bytes net/http had read past the request are
// still ahead of it, and whether the library's next read is at a frame's
// first byte.
type readConn struct {
	net.Conn
	// early: bytes read past the request wait in front of this reader.
	early atomic.Bool
	// atFrame: the library answered a ping (or took a pong) and nothing is
	// buffered: its next read is of a frame header's first byte, where a
	// read error leaves the connection as it was (see Read).
	atFrame atomic.Bool
	// inReader: the read is the library's Reader looking for the next
	// message (not a continuation frame mid-message, not the close
	// handshake).
	inReader atomic.Bool
	// s is the session reading, set when it is made; br is the library's
	// read buffer over this connection.
	s  *Session
	br *bufio.Reader
}

// controlFrameRead is the library's OnPingReceived and OnPongReceived: the
// library stays in its read after a control frame, so a parked session
// woken by a ping would keep its goroutine until the next data message.
// Its next read, at a frame's first byte, may be asked to park instead.
func (c *readConn) controlFrameRead() {
	if c.br != nil && c.br.Buffered() == 0 {
		c.atFrame.Store(true)
	}
}

// Read is every read of the library's. The one at a frame's first byte
// after a control frame waits like the reader's own wait (park.go): the
// Parker's sweep may end it with a past read deadline, and the library
// then returns the timeout from Reader having consumed nothing, which
// the reader takes as the request to park (WebSocket library v1.8.15:
// readFrameHeader returns a read error as it is, without closing).
func (c *readConn) Read(p []byte) (int, error) {
	c.early.Store(false)
	s := c.s
	parkable := s != nil && c.atFrame.Swap(false) && c.inReader.Load() && s.canPark()
	if parkable {
		s.park.state.Store(readerWaiting)
	}
	n, err := c.Conn.Read(p)
	if parkable && !s.park.state.CompareAndSwap(readerWaiting, readerActive) && (n > 0 || !errors.Is(err, os.ErrDeadlineExceeded)) {
		// Asked to park, but bytes (or another error) came first: the
		// library goes on reading, without the deadline.
		s.unkick()
	}
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *smallBufferWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
