package main

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func TestFrameRoundTrip(t *testing.T) {
	tests := map[string]struct {
		sampleRate int
		header     frameHeader
		wantBytes  int
	}{
		"24 kHz, first frame":  {sampleRate: 24000, header: frameHeader{seq: 0, sentAt: 0}, wantBytes: 960},
		"16 kHz":               {sampleRate: 16000, header: frameHeader{seq: 7, sentAt: 1500 * time.Millisecond}, wantBytes: 640},
		"largest sequence":     {sampleRate: 24000, header: frameHeader{seq: ^uint32(0), sentAt: 36 * time.Hour}, wantBytes: 960},
		"nanosecond send time": {sampleRate: 16000, header: frameHeader{seq: 1 << 20, sentAt: 123456789}, wantBytes: 640},
		"turn and index":       {sampleRate: 24000, header: frameHeader{seq: 99, sentAt: time.Second, turn: 3, index: 49}, wantBytes: 960},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			frame := newFrameTemplate(tc.sampleRate)
			if len(frame) != tc.wantBytes {
				t.Fatalf("frame is %d bytes, want %d (20 ms of PCM16)", len(frame), tc.wantBytes)
			}
			tone := append([]byte(nil), frame[frameHeaderSize:]...)
			encodeFrame(frame, tc.header)
			got, err := decodeFrame(frame)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.header {
				t.Fatalf("decoded %+v, want %+v", got, tc.header)
			}
			if !bytes.Equal(frame[frameHeaderSize:], tone) {
				t.Fatal("encoding touched the audio after the header")
			}
		})
	}
}

func TestDecodeFrameRejects(t *testing.T) {
	valid := newFrameTemplate(16000)
	encodeFrame(valid, frameHeader{seq: 1})
	tests := map[string]struct {
		chunk []byte
		want  error
	}{
		"empty":               {chunk: nil, want: errShortFrame},
		"shorter than header": {chunk: valid[:frameHeaderSize-1], want: errShortFrame},
		"foreign audio":       {chunk: make([]byte, 640), want: errNoMagic},
		"header only":         {chunk: valid[:frameHeaderSize], want: nil},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := decodeFrame(tc.chunk); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestSeqSet(t *testing.T) {
	type step struct {
		seq              uint32
		fresh, reordered bool
	}
	tests := map[string]struct {
		steps     []step
		wantCount int
	}{
		"in order":      {steps: []step{{0, true, false}, {1, true, false}, {2, true, false}}, wantCount: 3},
		"duplicate":     {steps: []step{{0, true, false}, {0, false, false}}, wantCount: 1},
		"late arrival":  {steps: []step{{0, true, false}, {2, true, false}, {1, true, true}}, wantCount: 3},
		"far word":      {steps: []step{{1000, true, false}, {5, true, true}, {1000, false, false}}, wantCount: 2},
		"word boundary": {steps: []step{{63, true, false}, {64, true, false}, {63, false, false}}, wantCount: 2},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := newSeqSet()
			for i, st := range tc.steps {
				fresh, reordered := s.add(st.seq)
				if fresh != st.fresh || reordered != st.reordered {
					t.Fatalf("step %d add(%d) = fresh %v reordered %v, want %v %v", i, st.seq, fresh, reordered, st.fresh, st.reordered)
				}
				if !s.has(st.seq) {
					t.Fatalf("step %d: has(%d) false after add", i, st.seq)
				}
			}
			if s.count != tc.wantCount {
				t.Fatalf("count %d, want %d", s.count, tc.wantCount)
			}
		})
	}
}

func TestCommitLogDue(t *testing.T) {
	var l commitLog
	l.record(7, 10*time.Second)
	tests := map[string]struct {
		h      frameHeader
		want   time.Duration
		wantOK bool
	}{
		"first frame of the turn": {h: frameHeader{turn: 7, index: 0}, want: 10 * time.Second, wantOK: true},
		"tenth frame":             {h: frameHeader{turn: 7, index: 10}, want: 10*time.Second + 200*time.Millisecond, wantOK: true},
		"turn not committed":      {h: frameHeader{turn: 8}},
		"same slot, older turn":   {h: frameHeader{turn: 7 + 64}},
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
