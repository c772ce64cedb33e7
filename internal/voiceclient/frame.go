package voiceclient

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// A frame is 20 ms of PCM16 LE mono audio whose first samples carry a
// header, so that every echoed chunk names the frame it came from:
//
//	bytes 0-3   magic "VGLD"
//	bytes 4-7   sequence number, uint32 LE, per call, continuing across sessions
//	bytes 8-15  send time, int64 LE nanoseconds since the process's monotonic epoch
//	bytes 16-19 turn: which input_audio_buffer.commit the frame belongs to, per call
//	bytes 20-23 the frame's index within its turn
//
// The rest is a tone, so that a person listening to a capture hears audio.
// The echo backend answers a commit with exactly the committed bytes in
// 20 ms chunks, so a chunk is a frame and the header survives the round trip.
// The turn and index say when the echo of a frame is due: chunk k of a turn
// cannot be played before the commit plus k·20 ms.
const (
	FrameDuration   = 20 * time.Millisecond
	FramesPerSecond = int(time.Second / FrameDuration)
	HeaderSize      = 24
	frameMagic      = 0x444c4756 // "VGLD" read as uint32 LE
)

var (
	ErrShortFrame = errors.New("frame shorter than its header")
	ErrNoMagic    = errors.New("frame does not start with the voiceclient magic")
)

// epoch is the monotonic origin of the send times embedded in frames. One
// process sends and receives every frame, so no clock is compared across
// machines.
var epoch = time.Now()

// Elapsed is the time since the process's epoch: the unit of
// FrameHeader.SentAt and Audio.Due.
func Elapsed() time.Duration { return time.Since(epoch) }

// elapsedAt is t as time since the epoch.
func elapsedAt(t time.Time) time.Duration { return t.Sub(epoch) }

// FrameBytes is the size of one 20 ms frame at sampleRate.
func FrameBytes(sampleRate int) int { return sampleRate * 2 / FramesPerSecond }

// FrameHeader is what a frame carries besides audio.
type FrameHeader struct {
	Seq    uint32
	SentAt time.Duration // since the epoch (Elapsed)
	Turn   uint32
	Index  uint32
}

// NewFrame returns one frame of a 440 Hz tone at a quarter of full scale;
// EncodeFrame overwrites only its header.
func NewFrame(sampleRate int) []byte {
	buf := make([]byte, FrameBytes(sampleRate))
	for i := 0; i < len(buf)/2; i++ {
		v := int16(8192 * math.Sin(2*math.Pi*440*float64(i)/float64(sampleRate)))
		binary.LittleEndian.PutUint16(buf[2*i:], uint16(v))
	}
	return buf
}

// tones holds one NewFrame per sample rate, copied for each schedule.
var tones sync.Map // int → []byte

// toneFrame returns a copy of NewFrame(sampleRate) without computing it again.
func toneFrame(sampleRate int) []byte {
	v, ok := tones.Load(sampleRate)
	if !ok {
		v, _ = tones.LoadOrStore(sampleRate, NewFrame(sampleRate))
	}
	return bytes.Clone(v.([]byte))
}

// EncodeFrame writes h into the first HeaderSize bytes of frame.
func EncodeFrame(frame []byte, h FrameHeader) {
	binary.LittleEndian.PutUint32(frame[0:], frameMagic)
	binary.LittleEndian.PutUint32(frame[4:], h.Seq)
	binary.LittleEndian.PutUint64(frame[8:], uint64(h.SentAt))
	binary.LittleEndian.PutUint32(frame[16:], h.Turn)
	binary.LittleEndian.PutUint32(frame[20:], h.Index)
}

// DecodeFrame reads the header of an echoed chunk.
func DecodeFrame(chunk []byte) (FrameHeader, error) {
	if len(chunk) < HeaderSize {
		return FrameHeader{}, ErrShortFrame
	}
	if binary.LittleEndian.Uint32(chunk[0:]) != frameMagic {
		return FrameHeader{}, ErrNoMagic
	}
	return FrameHeader{
		Seq:    binary.LittleEndian.Uint32(chunk[4:]),
		SentAt: time.Duration(binary.LittleEndian.Uint64(chunk[8:])),
		Turn:   binary.LittleEndian.Uint32(chunk[16:]),
		Index:  binary.LittleEndian.Uint32(chunk[20:]),
	}, nil
}

// commitLog remembers when a session's recent turns were committed, for
// the reader to know when each echoed frame was due. The sender writes, the
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
func (l *commitLog) due(h FrameHeader) (time.Duration, bool) {
	s := &l.slots[h.Turn%64]
	at := s.at.Load()
	if s.turn.Load() != h.Turn || at == 0 {
		return 0, false
	}
	return time.Duration(at) + time.Duration(h.Index)*FrameDuration, true
}
