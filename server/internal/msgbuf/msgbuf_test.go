package msgbuf

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
	"unsafe"
)

// countingReader counts the bytes it hands out.
type countingReader struct {
	r    io.Reader
	read int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.read += n
	return n, err
}

// chunkReader hands out at most size bytes per Read, like a WebSocket
// message arriving in frames.
type chunkReader struct {
	data []byte
	size int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), c.size)], c.data)
	c.data = c.data[n:]
	return n, nil
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/256)
	}
	return b
}

func TestReadMessage(t *testing.T) {
	errReset := errors.New("connection reset by peer")
	cases := []struct {
		name  string
		limit int64
		data  []byte
		// reader wraps the message's reader; nil reads it as is.
		reader func(io.Reader) io.Reader
		// start is the buffer's initial capacity.
		start   int
		wantErr error
	}{
		{name: "empty message", limit: 100, data: nil},
		{name: "under the limit", limit: 100, data: pattern(99)},
		{name: "exactly the limit", limit: 100, data: pattern(100)},
		{name: "one past the limit", limit: 100, data: pattern(101), wantErr: ErrTooLarge},
		{name: "far past the limit", limit: 100, data: pattern(1 << 20), wantErr: ErrTooLarge},
		{name: "exactly the limit from an empty buffer", limit: 5000, data: pattern(5000)},
		{name: "one past the limit from an empty buffer", limit: 5000, data: pattern(5001), wantErr: ErrTooLarge},
		{name: "growth through several sizes", limit: 64 << 10, data: pattern(40000)},
		{name: "exactly a large limit", limit: 64 << 10, data: pattern(64 << 10)},
		{name: "one past a large limit", limit: 64 << 10, data: pattern(64<<10 + 1), wantErr: ErrTooLarge},
		{name: "limit of zero takes an empty message", limit: 0, data: nil},
		{name: "limit of zero refuses one byte", limit: 0, data: pattern(1), wantErr: ErrTooLarge},
		{name: "from a pooled buffer", limit: 64 << 10, data: pattern(300), start: 8 << 10},
		{name: "pooled buffer larger than the limit", limit: 100, data: pattern(101), start: 8 << 10, wantErr: ErrTooLarge},
		{name: "one byte per read", limit: 100, data: pattern(100), reader: iotest.OneByteReader},
		{name: "one byte per read past the limit", limit: 100, data: pattern(101), reader: iotest.OneByteReader, wantErr: ErrTooLarge},
		{name: "half per read", limit: 10000, data: pattern(9000), reader: iotest.HalfReader},
		{name: "data arrives with EOF", limit: 100, data: pattern(50), reader: iotest.DataErrReader},
		{name: "data with EOF at exactly the limit", limit: 100, data: pattern(100), reader: iotest.DataErrReader},
		{name: "data with EOF past the limit", limit: 100, data: pattern(101), reader: iotest.DataErrReader, wantErr: ErrTooLarge},
		{name: "reader error is passed through", limit: 100, data: pattern(10),
			reader: func(r io.Reader) io.Reader { return io.MultiReader(r, iotest.ErrReader(errReset)) }, wantErr: errReset},
		{name: "reader error at once", limit: 100,
			reader: func(io.Reader) io.Reader { return iotest.ErrReader(errReset) }, wantErr: errReset},
		{name: "timeout is passed through", limit: 100, data: pattern(10), reader: iotest.TimeoutReader, wantErr: iotest.ErrTimeout},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			counter := &countingReader{r: bytes.NewReader(tc.data)}
			var r io.Reader = counter
			if tc.reader != nil {
				r = tc.reader(counter)
			}
			b := make([]byte, 0, tc.start)
			buf := &b
			n, err := ReadMessage(r, buf, tc.limit, nil)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("readMessage = %d, %v; want error %v", n, err, tc.wantErr)
			}
			if int64(counter.read) > max(tc.limit+1, int64(tc.start)) {
				t.Errorf("read %d bytes of the message, want at most what fits in limit+1 (%d) or the buffer (%d)", counter.read, tc.limit+1, tc.start)
			}
			if err != nil {
				if n != 0 {
					t.Errorf("n = %d with an error, want 0", n)
				}
				return
			}
			if n != len(tc.data) || !bytes.Equal((*buf)[:n], tc.data) {
				t.Errorf("read %d bytes, want the %d-byte message", n, len(tc.data))
			}
			if grown := int64(cap(*buf)); grown > max(tc.limit+1, int64(tc.start)) {
				t.Errorf("buffer grew to %d, past limit+1 = %d", grown, tc.limit+1)
			}
		})
	}
}

// TestReadMessageReusesBuffer checks that a buffer with room is read into,
// not replaced, and that a grown buffer is handed back through buf.
func TestReadMessageReusesBuffer(t *testing.T) {
	b := make([]byte, 0, 1024)
	buf := &b
	if _, err := ReadMessage(bytes.NewReader(pattern(500)), buf, 4096, nil); err != nil {
		t.Fatal(err)
	}
	if unsafe.SliceData(*buf) != unsafe.SliceData(b) {
		t.Error("a message that fit was read into a new buffer")
	}
	*buf = (*buf)[:0]
	n, err := ReadMessage(bytes.NewReader(pattern(3000)), buf, 4096, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cap(*buf) < n || !bytes.Equal((*buf)[:n], pattern(3000)) {
		t.Errorf("grown buffer not handed back: cap %d for a %d-byte message", cap(*buf), n)
	}
}

// FuzzReadMessage checks ReadMessage against the obvious rule for any
// message, limit and framing.
func FuzzReadMessage(f *testing.F) {
	f.Add([]byte(""), uint16(0), uint16(1))
	f.Add([]byte("hello"), uint16(5), uint16(1))
	f.Add([]byte("hello"), uint16(4), uint16(3))
	f.Add(pattern(5000), uint16(4096), uint16(1000))
	f.Add(pattern(4097), uint16(4096), uint16(4097))
	f.Fuzz(func(t *testing.T, data []byte, limit, chunk uint16) {
		r := &chunkReader{data: data, size: int(chunk)%4096 + 1}
		buf := Get(0)
		defer Put(buf)
		n, err := ReadMessage(r, buf, int64(limit), nil)
		if len(data) > int(limit) {
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("%d-byte message, limit %d: got %d, %v; want ErrTooLarge", len(data), limit, n, err)
			}
			return
		}
		if err != nil || n != len(data) || !bytes.Equal((*buf)[:n], data) {
			t.Fatalf("%d-byte message, limit %d: got %d, %v; want the message", len(data), limit, n, err)
		}
	})
}

func TestBufferPool(t *testing.T) {
	cases := []struct {
		name string
		n    int
	}{
		{name: "small request", n: 10},
		{name: "request past the default size", n: 100 << 10},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := Get(tc.n)
			if len(*b) != 0 || cap(*b) < tc.n {
				t.Errorf("Get(%d) = len %d cap %d, want empty with room for %d", tc.n, len(*b), cap(*b), tc.n)
			}
			*b = append(*b, "used"...)
			Put(b)
		})
	}
	// Every buffer comes back empty, whatever it held before.
	for range 100 {
		b := Get(0)
		if len(*b) != 0 {
			t.Fatalf("Get returned a buffer holding %q", *b)
		}
		*b = append(*b, "stale"...)
		Put(b)
	}
}

// TestReadMessageAsksBeforeGrowing: every growth of the buffer is asked
// for first, with the new capacity; a refused growth reads the rest of the
// message and drops it (ErrRefused), so the next message starts where it
// should, and a message over the limit is still ErrTooLarge.
func TestReadMessageAsksBeforeGrowing(t *testing.T) {
	var asked []int
	allow := func(limit int) func(int) bool {
		return func(newCap int) bool {
			asked = append(asked, newCap)
			return newCap <= limit
		}
	}
	b := make([]byte, 0, Small)
	n, err := ReadMessage(&chunkReader{data: pattern(40 << 10), size: 3000}, &b, 256<<10, allow(64<<10))
	if err != nil || n != 40<<10 || !bytes.Equal(b[:n], pattern(40<<10)) {
		t.Fatalf("40 KiB with growth allowed: %d, %v", n, err)
	}
	if want := []int{16 << 10, 32 << 10, 64 << 10}; !equalInts(asked, want) {
		t.Fatalf("asked for %v, want %v", asked, want)
	}

	asked = nil
	b = make([]byte, 0, Small)
	r := &countingReader{r: &chunkReader{data: pattern(100 << 10), size: 5000}}
	if n, err := ReadMessage(r, &b, 256<<10, allow(32<<10)); !errors.Is(err, ErrRefused) || n != 0 {
		t.Fatalf("100 KiB with growth refused past 32 KiB: %d, %v; want ErrRefused", n, err)
	}
	if r.read != 100<<10 {
		t.Fatalf("read %d bytes of the refused message, want all of it", r.read)
	}
	if cap(b) > 32<<10 {
		t.Fatalf("the buffer grew to %d past the refusal", cap(b))
	}

	b = make([]byte, 0, Small)
	if _, err := ReadMessage(&chunkReader{data: pattern(300 << 10), size: 5000}, &b, 256<<10, allow(0)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("a refused message over the limit: %v, want ErrTooLarge", err)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestSmallRequestsGetSmallBuffers: a large buffer put back is never
// handed out for a small message, which would hold it for nothing.
func TestSmallRequestsGetSmallBuffers(t *testing.T) {
	for range 10 {
		Put(Get(60 << 10))
	}
	for range 100 {
		b := Get(100)
		if cap(*b) != Small {
			t.Fatalf("Get(100) has capacity %d, want %d", cap(*b), Small)
		}
		defer Put(b)
	}
	if b := Get(20 << 10); cap(*b) < 20<<10 {
		t.Fatalf("Get(20 KiB) has capacity %d", cap(*b))
	}
}
