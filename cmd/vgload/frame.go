package main

import (
	"encoding/binary"
	"errors"
	"math"
	"sync/atomic"
	"time"
)

// A frame is 20 ms of PCM16 LE mono audio whose first samples carry a
// header, so that every echoed chunk names the frame it came from:
//
//	bytes 0-3   magic "VGLD"
//	bytes 4-7   sequence number, uint32 LE, per session, continuing across reconnects
//	bytes 8-15  send time, int64 LE nanoseconds since the run's monotonic epoch
//	bytes 16-19 turn: which input_audio_buffer.commit the frame belongs to, per session
//	bytes 20-23 the frame's index within its turn
//
// The rest is a tone, so that a person listening to a capture hears audio.
// The echo backend answers a commit with exactly the committed bytes in
// 20 ms chunks, so a chunk is a frame and the header survives the round trip.
// The turn and index say when the echo of a frame is due: chunk k of a turn
// cannot be played before the commit plus k·20 ms.
const (
	frameDuration   = 20 * time.Millisecond
	frameHeaderSize = 24
	frameMagic      = 0x444c4756 // "VGLD" read as uint32 LE
	framesPerSecond = int(time.Second / frameDuration)
)

var (
	errShortFrame = errors.New("frame shorter than its header")
	errNoMagic    = errors.New("frame does not start with the vgload magic")
)

// frameBytes is the size of one 20 ms frame at sampleRate.
func frameBytes(sampleRate int) int { return sampleRate * 2 / framesPerSecond }

// frameHeader is what a frame carries besides audio.
type frameHeader struct {
	seq    uint32
	sentAt time.Duration // since the run's epoch
	turn   uint32
	index  uint32
}

// newFrameTemplate returns one frame of a 440 Hz tone at a quarter of full
// scale; encodeFrame overwrites only its header.
func newFrameTemplate(sampleRate int) []byte {
	buf := make([]byte, frameBytes(sampleRate))
	for i := 0; i < len(buf)/2; i++ {
		v := int16(8192 * math.Sin(2*math.Pi*440*float64(i)/float64(sampleRate)))
		binary.LittleEndian.PutUint16(buf[2*i:], uint16(v))
	}
	return buf
}

// encodeFrame writes h into the first frameHeaderSize bytes of frame.
func encodeFrame(frame []byte, h frameHeader) {
	binary.LittleEndian.PutUint32(frame[0:], frameMagic)
	binary.LittleEndian.PutUint32(frame[4:], h.seq)
	binary.LittleEndian.PutUint64(frame[8:], uint64(h.sentAt))
	binary.LittleEndian.PutUint32(frame[16:], h.turn)
	binary.LittleEndian.PutUint32(frame[20:], h.index)
}

// decodeFrame reads the header of an echoed chunk.
func decodeFrame(chunk []byte) (frameHeader, error) {
	if len(chunk) < frameHeaderSize {
		return frameHeader{}, errShortFrame
	}
	if binary.LittleEndian.Uint32(chunk[0:]) != frameMagic {
		return frameHeader{}, errNoMagic
	}
	return frameHeader{
		seq:    binary.LittleEndian.Uint32(chunk[4:]),
		sentAt: time.Duration(binary.LittleEndian.Uint64(chunk[8:])),
		turn:   binary.LittleEndian.Uint32(chunk[16:]),
		index:  binary.LittleEndian.Uint32(chunk[20:]),
	}, nil
}

// seqSet records which sequence numbers of one session came back, to count
// losses, duplicates and reordering exactly. It grows with the highest
// sequence seen: one bit per frame, 6 KB per session-hour.
type seqSet struct {
	bits    []uint64
	highest int64 // -1 before the first
	count   int
}

func newSeqSet() seqSet { return seqSet{highest: -1} }

// add marks seq received. It reports whether seq was new and whether it
// came after a higher one (out of order).
func (s *seqSet) add(seq uint32) (fresh, reordered bool) {
	word, bit := int(seq/64), uint64(1)<<(seq%64)
	for word >= len(s.bits) {
		s.bits = append(s.bits, 0)
	}
	if s.bits[word]&bit != 0 {
		return false, false
	}
	s.bits[word] |= bit
	s.count++
	reordered = int64(seq) < s.highest
	if int64(seq) > s.highest {
		s.highest = int64(seq)
	}
	return true, reordered
}

func (s *seqSet) has(seq uint32) bool {
	word := int(seq / 64)
	return word < len(s.bits) && s.bits[word]&(uint64(1)<<(seq%64)) != 0
}

// commitLog remembers when a session sent its recent commits, for the
// reader to know when each echoed frame was due. The sender writes, the
// reader reads; turns are far enough apart that a ring of 64 never wraps
// onto a turn still being echoed.
type commitLog struct {
	slots [64]struct {
		turn atomic.Uint32
		at   atomic.Int64 // since epoch; 0 = unknown
	}
}

func (l *commitLog) record(turn uint32, at time.Duration) {
	s := &l.slots[turn%64]
	s.at.Store(int64(at))
	s.turn.Store(turn)
}

// due returns when the echo of frame h can first arrive: its turn's commit
// plus index·20 ms. ok is false when the commit is not known.
func (l *commitLog) due(h frameHeader) (time.Duration, bool) {
	s := &l.slots[h.turn%64]
	at := s.at.Load()
	if s.turn.Load() != h.turn || at == 0 {
		return 0, false
	}
	return time.Duration(at) + time.Duration(h.index)*frameDuration, true
}
