package voiceclient

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func TestFrameRoundTrip(t *testing.T) {
	tests := map[string]struct {
		sampleRate int
		header     FrameHeader
		wantBytes  int
	}{
		"24 kHz, first frame":  {sampleRate: 24000, header: FrameHeader{Seq: 0, SentAt: 0}, wantBytes: 960},
		"16 kHz":               {sampleRate: 16000, header: FrameHeader{Seq: 7, SentAt: 1500 * time.Millisecond}, wantBytes: 640},
		"largest sequence":     {sampleRate: 24000, header: FrameHeader{Seq: ^uint32(0), SentAt: 36 * time.Hour}, wantBytes: 960},
		"nanosecond send time": {sampleRate: 16000, header: FrameHeader{Seq: 1 << 20, SentAt: 123456789}, wantBytes: 640},
		"turn and index":       {sampleRate: 24000, header: FrameHeader{Seq: 99, SentAt: time.Second, Turn: 3, Index: 49}, wantBytes: 960},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			frame := NewFrame(tc.sampleRate)
			if len(frame) != tc.wantBytes {
				t.Fatalf("frame is %d bytes, want %d (20 ms of PCM16)", len(frame), tc.wantBytes)
			}
			tone := append([]byte(nil), frame[HeaderSize:]...)
			EncodeFrame(frame, tc.header)
			got, err := DecodeFrame(frame)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.header {
				t.Fatalf("decoded %+v, want %+v", got, tc.header)
			}
			if !bytes.Equal(frame[HeaderSize:], tone) {
				t.Fatal("encoding touched the audio after the header")
			}
		})
	}
}

func TestDecodeFrameRejects(t *testing.T) {
	valid := NewFrame(16000)
	EncodeFrame(valid, FrameHeader{Seq: 1})
	tests := map[string]struct {
		chunk []byte
		want  error
	}{
		"empty":               {chunk: nil, want: ErrShortFrame},
		"shorter than header": {chunk: valid[:HeaderSize-1], want: ErrShortFrame},
		"foreign audio":       {chunk: make([]byte, 640), want: ErrNoMagic},
		"header only":         {chunk: valid[:HeaderSize], want: nil},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := DecodeFrame(tc.chunk); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestCommitLogDue(t *testing.T) {
	var l commitLog
	l.record(7, 10*time.Second)
	tests := map[string]struct {
		h      FrameHeader
		want   time.Duration
		wantOK bool
	}{
		"first frame of the turn": {h: FrameHeader{Turn: 7, Index: 0}, want: 10 * time.Second, wantOK: true},
		"tenth frame":             {h: FrameHeader{Turn: 7, Index: 10}, want: 10*time.Second + 200*time.Millisecond, wantOK: true},
		"turn not committed":      {h: FrameHeader{Turn: 8}},
		"same slot, older turn":   {h: FrameHeader{Turn: 7 + 64}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, ok := l.due(tc.h)
			if ok != tc.wantOK || got != tc.want {
				t.Fatalf("due(%+v) = %v, %v; want %v, %v", tc.h, got, ok, tc.want, tc.wantOK)
			}
		})
	}
}
