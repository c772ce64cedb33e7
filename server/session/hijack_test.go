package session

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
)

// headerScratch keeps writeFrameOp itself from allocating.
var headerScratch [10]byte

// writeFrameOp writes a server frame of opcode op the way the WebSocket
// library does: the header into the buffered writer, then the payload,
// then a flush.
func writeFrameOp(t testing.TB, bw *bufio.Writer, op byte, payload []byte) {
	hdr := append(headerScratch[:0], 0x80|op)
	switch n := len(payload); {
	case n < 126:
		hdr = append(hdr, byte(n))
	case n < 1<<16:
		hdr = binary.BigEndian.AppendUint16(append(hdr, 126), uint16(n))
	default:
		hdr = binary.BigEndian.AppendUint64(append(hdr, 127), uint64(n))
	}
	if _, err := bw.Write(hdr); err != nil {
		t.Fatal(err)
	}
	if _, err := bw.Write(payload); err != nil {
		t.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
}

// writeFrame writes a binary frame.
func writeFrame(t testing.TB, bw *bufio.Writer, payload []byte) { writeFrameOp(t, bw, opBin, payload) }

func loopback(t *testing.T) (server *net.TCPConn, client net.Conn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		client.Close()
	})
	return s.(*net.TCPConn), client
}

// TestFrameWriter: frames of every header size go out intact through the
// 16-byte write buffer, none is left held after its flush, and an audio
// frame costs no allocation.
func TestFrameWriter(t *testing.T) {
	server, client := loopback(t)
	var want bytes.Buffer
	sizes := []int{0, 1, 13, 14, 15, 100, 125, 126, 960, 1400, 65535, 65536, 200 << 10}
	received := make(chan []byte, 1)
	go func() {
		got, _ := io.ReadAll(client)
		received <- got
	}()
	fw := &frameWriter{conn: server}
	bw := bufio.NewWriterSize(fw, frameHeadSize)
	for _, n := range sizes {
		payload := bytes.Repeat([]byte{byte(n)}, n)
		writeFrame(t, bw, payload)
		want.Write(frameBytes(payload))
		if fw.held != 0 {
			t.Fatalf("%d-byte frame: %d bytes held after the flush", n, fw.held)
		}
	}
	audio := make([]byte, 960)
	if allocs := testing.AllocsPerRun(100, func() { writeFrame(t, bw, audio) }); allocs != 0 {
		t.Errorf("%.1f allocations per audio frame, want 0", allocs)
	}
	for i := 0; i < 101; i++ {
		want.Write(frameBytes(audio))
	}
	server.CloseWrite()
	if got := <-received; !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("received %d bytes, want the %d written", len(got), want.Len())
	}
}

func frameBytes(payload []byte) []byte { return frameBytesOp(opBin, payload) }

func frameBytesOp(op byte, payload []byte) []byte {
	var b bytes.Buffer
	bw := bufio.NewWriter(&b)
	writeFrameOp(nil, bw, op, payload)
	return b.Bytes()
}

// sendFrame writes a frame as the library does and returns its bytes.
func sendFrame(t testing.TB, bw *bufio.Writer, op byte, payload []byte) []byte {
	writeFrameOp(t, bw, op, payload)
	return frameBytesOp(op, payload)
}

// recordingConn records each write frameWriter makes (a writev shows as
// its parts: only net's own connections write vectors).
type recordingConn struct {
	net.Conn
	writes [][]byte
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

func (c *recordingConn) all() []byte { return bytes.Join(c.writes, nil) }

const (
	opText  = 0x1
	opBin   = 0x2
	opClose = 0x8
	opPong  = 0xA
)

// TestFrameWriterBatch: between beginBatch and endBatch data frames are
// kept and leave in one write; a control frame (a pong, the close echo)
// sends what is kept and then itself at once, so bytes leave in the order
// they came and a close echo is out before the library closes the
// connection; a large frame goes out with what is kept rather than being
// copied.
func TestFrameWriterBatch(t *testing.T) {
	t.Run("data frames leave in one write", func(t *testing.T) {
		rec := &recordingConn{}
		fw := &frameWriter{conn: rec}
		bw := bufio.NewWriterSize(fw, frameHeadSize)
		var want []byte
		fw.beginBatch()
		for _, n := range []int{10, 200, 960, 13, 3000} {
			want = append(want, sendFrame(t, bw, opText, bytes.Repeat([]byte{'a'}, n))...)
		}
		if len(rec.writes) != 0 {
			t.Fatalf("%d writes before endBatch, want 0", len(rec.writes))
		}
		if err := fw.endBatch(); err != nil {
			t.Fatal(err)
		}
		if len(rec.writes) != 1 || !bytes.Equal(rec.writes[0], want) {
			t.Fatalf("%d writes of %d bytes, want one of the %d written", len(rec.writes), len(rec.all()), len(want))
		}
	})
	for _, tc := range []struct {
		name    string
		op      byte
		payload int
	}{
		{"a short pong", opPong, 4},
		{"a pong longer than the write buffer", opPong, 100},
		{"the close echo", opClose, 2},
	} {
		t.Run(tc.name+" goes out at once and in order", func(t *testing.T) {
			rec := &recordingConn{}
			fw := &frameWriter{conn: rec}
			bw := bufio.NewWriterSize(fw, frameHeadSize)
			var want []byte
			fw.beginBatch()
			want = append(want, sendFrame(t, bw, opText, bytes.Repeat([]byte{'a'}, 300))...)
			want = append(want, sendFrame(t, bw, opBin, bytes.Repeat([]byte{'b'}, 960))...)
			control := sendFrame(t, bw, tc.op, bytes.Repeat([]byte{'c'}, tc.payload))
			want = append(want, control...)
			if got := rec.all(); !bytes.Equal(got, want) {
				t.Fatalf("before endBatch %d bytes out, want the data frames and the control frame (%d)", len(got), len(want))
			}
			want = append(want, sendFrame(t, bw, opText, bytes.Repeat([]byte{'d'}, 50))...)
			if err := fw.endBatch(); err != nil {
				t.Fatal(err)
			}
			if got := rec.all(); !bytes.Equal(got, want) {
				t.Fatalf("%d bytes out, want %d in the order written", len(got), len(want))
			}
		})
	}
	t.Run("a large frame is not copied", func(t *testing.T) {
		rec := &recordingConn{}
		fw := &frameWriter{conn: rec}
		bw := bufio.NewWriterSize(fw, frameHeadSize)
		fw.beginBatch()
		small := sendFrame(t, bw, opText, bytes.Repeat([]byte{'a'}, 100))
		large := sendFrame(t, bw, opBin, bytes.Repeat([]byte{'b'}, 20<<10))
		if err := fw.endBatch(); err != nil {
			t.Fatal(err)
		}
		want := append(append([]byte{}, small...), large...)
		if got := rec.all(); !bytes.Equal(got, want) {
			t.Fatalf("%d bytes out, want %d in order", len(got), len(want))
		}
		last := rec.writes[len(rec.writes)-1]
		if len(last) != (20<<10)-(frameHeadSize-4) {
			t.Errorf("the large payload went out as a %d-byte write, want it written from the library's own slice", len(last))
		}
	})
}

// TestFrameWriterBatchWithConcurrentControlFrames: the session's writer
// sends batches while another goroutine (the library's reader answering
// pings) writes pongs, each frame under one lock as the library writes
// them. On a real socket every frame arrives whole and the data frames in
// their order; run with -race.
func TestFrameWriterBatchWithConcurrentControlFrames(t *testing.T) {
	server, client := loopback(t)
	fw := &frameWriter{conn: server}
	bw := bufio.NewWriterSize(fw, frameHeadSize)
	var frameLock sync.Mutex // the library's frame lock
	const batches, perBatch, pongs = 200, 6, 500
	type frame struct {
		op      byte
		payload []byte
	}
	received := make(chan []frame, 1)
	go func() {
		var got []frame
		br := bufio.NewReader(client)
		for {
			var hdr [10]byte
			if _, err := io.ReadFull(br, hdr[:2]); err != nil {
				received <- got
				return
			}
			n := uint64(hdr[1] & 0x7f)
			switch n {
			case 126:
				io.ReadFull(br, hdr[2:4])
				n = uint64(binary.BigEndian.Uint16(hdr[2:4]))
			case 127:
				io.ReadFull(br, hdr[2:10])
				n = binary.BigEndian.Uint64(hdr[2:10])
			}
			p := make([]byte, n)
			if _, err := io.ReadFull(br, p); err != nil {
				received <- got
				return
			}
			got = append(got, frame{hdr[0] & 0x0f, p})
		}
	}()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < pongs; i++ {
			frameLock.Lock()
			writeFrameOp(t, bw, opPong, bytes.Repeat([]byte{'p'}, i%120))
			frameLock.Unlock()
		}
	}()
	seq := 0
	for b := 0; b < batches; b++ {
		fw.beginBatch()
		for i := 0; i < perBatch; i++ {
			payload := binary.BigEndian.AppendUint32(nil, uint32(seq))
			payload = append(payload, bytes.Repeat([]byte{'d'}, (seq*37)%1500)...)
			seq++
			frameLock.Lock()
			writeFrameOp(t, bw, opBin, payload)
			frameLock.Unlock()
		}
		if err := fw.endBatch(); err != nil {
			t.Fatal(err)
		}
	}
	<-done
	server.CloseWrite()
	got := <-received
	data, pongsSeen := 0, 0
	for _, f := range got {
		switch f.op {
		case opBin:
			if n := int(binary.BigEndian.Uint32(f.payload)); n != data || len(f.payload) != 4+(n*37)%1500 {
				t.Fatalf("data frame %d: got sequence %d with %d bytes", data, n, len(f.payload))
			}
			data++
		case opPong:
			if len(f.payload) != pongsSeen%120 {
				t.Fatalf("pong %d: %d bytes, want %d", pongsSeen, len(f.payload), pongsSeen%120)
			}
			pongsSeen++
		default:
			t.Fatalf("frame with opcode %#x: the stream is garbled", f.op)
		}
	}
	if data != batches*perBatch || pongsSeen != pongs {
		t.Fatalf("%d data frames and %d pongs arrived whole, want %d and %d", data, pongsSeen, batches*perBatch, pongs)
	}
}
