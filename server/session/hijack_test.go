package session

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"
)

// headerScratch keeps writeFrame itself from allocating.
var headerScratch [10]byte

// writeFrame writes a server frame the way the WebSocket library does:
// the header into the buffered writer, then the payload, then a flush.
func writeFrame(t testing.TB, bw *bufio.Writer, payload []byte) {
	hdr := append(headerScratch[:0], 0x82)
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

func frameBytes(payload []byte) []byte {
	var b bytes.Buffer
	bw := bufio.NewWriter(&b)
	writeFrame(nil, bw, payload)
	return b.Bytes()
}
