package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/voicegateway/voicegateway/server/ratelimit"
)

// The wire format of the limiter's replicated state. Everything memberlist
// carries is encrypted and authenticated with the fleet key before it gets
// here; these bounds are for a peer that holds the key and is broken.
//
//	message: version(1) kindRecord(1) record
//	state:   version(1) kindState(1) count(uint32) record × count
//	record:  ip(16, IPv4 mapped) blockedUntil(int64) suspiciousUntil(int64)
//	         n(uint8) counter × n
//	counter: origin(uint64) newestSlot(int64) slots(uint16 × 8)
//
// Integers are big-endian; times are Unix nanoseconds, 0 for none.
const (
	wireVersion = 1
	kindRecord  = 1
	kindState   = 2

	recordHeaderBytes = 16 + 8 + 8 + 1
	counterBytes      = 8 + 8 + 2*ratelimit.SlotCount
	// maxCounters is the local origin plus the peers' a record may carry.
	maxCounters = ratelimit.MaxOrigins + 1
	// maxRecordBytes is the largest record.
	maxRecordBytes = recordHeaderBytes + maxCounters*counterBytes

	// MaxMessageBytes bounds one gossiped message: a header and one
	// record. A larger one is dropped and counted as oversized.
	MaxMessageBytes = 2 + maxRecordBytes
	// MaxStateBytes bounds a full state sent or taken in an anti-entropy
	// exchange, under memberlist's own 20 MiB bound on a push/pull. A
	// larger one is dropped whole; a replica sending its own state stops
	// at this size, blocks first.
	MaxStateBytes = 16 << 20
	// MaxStateRecords bounds the records of one state.
	MaxStateRecords = MaxStateBytes / recordHeaderBytes
)

var (
	errVersion   = errors.New("unknown wire version")
	errCorrupt   = errors.New("corrupt")
	errOversized = errors.New("oversized")
)

func appendRecord(b []byte, r *ratelimit.Record) []byte {
	ip := r.IP.As16()
	b = append(b, ip[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(r.BlockedUntil))
	b = binary.BigEndian.AppendUint64(b, uint64(r.SuspiciousUntil))
	n := min(len(r.Counters), maxCounters)
	b = append(b, byte(n))
	for i := range n {
		c := &r.Counters[i]
		b = binary.BigEndian.AppendUint64(b, uint64(c.Origin))
		b = binary.BigEndian.AppendUint64(b, uint64(c.NewestSlot))
		for _, s := range c.Slots {
			b = binary.BigEndian.AppendUint16(b, s)
		}
	}
	return b
}

// readRecord decodes one record from the front of b into r, reusing r's
// Counters, and returns the rest of b.
func readRecord(b []byte, r *ratelimit.Record) ([]byte, error) {
	if len(b) < recordHeaderBytes {
		return nil, fmt.Errorf("%w: record of %d bytes", errCorrupt, len(b))
	}
	r.IP = netip.AddrFrom16([16]byte(b[:16])).Unmap()
	r.BlockedUntil = int64(binary.BigEndian.Uint64(b[16:]))
	r.SuspiciousUntil = int64(binary.BigEndian.Uint64(b[24:]))
	n := int(b[32])
	b = b[recordHeaderBytes:]
	if n > maxCounters {
		return nil, fmt.Errorf("%w: %d counters, at most %d", errCorrupt, n, maxCounters)
	}
	if len(b) < n*counterBytes {
		return nil, fmt.Errorf("%w: %d counters in %d bytes", errCorrupt, n, len(b))
	}
	r.Counters = r.Counters[:0]
	for range n {
		c := ratelimit.Counter{
			Origin:     ratelimit.Origin(binary.BigEndian.Uint64(b)),
			NewestSlot: int64(binary.BigEndian.Uint64(b[8:])),
		}
		for i := range c.Slots {
			c.Slots[i] = binary.BigEndian.Uint16(b[16+2*i:])
		}
		r.Counters = append(r.Counters, c)
		b = b[counterBytes:]
	}
	return b, nil
}

// encodeMessage is the gossiped form of one change.
func encodeMessage(c *ratelimit.Change) []byte {
	r := ratelimit.Record{IP: c.IP, BlockedUntil: c.BlockedUntil, SuspiciousUntil: c.SuspiciousUntil, Counters: []ratelimit.Counter{c.Own}}
	return appendRecord(append(make([]byte, 0, 2+recordHeaderBytes+counterBytes), wireVersion, kindRecord), &r)
}

// decodeMessage reads a gossiped message into r.
func decodeMessage(b []byte, r *ratelimit.Record) error {
	if len(b) > MaxMessageBytes {
		return errOversized
	}
	if len(b) < 2 {
		return fmt.Errorf("%w: message of %d bytes", errCorrupt, len(b))
	}
	if b[0] != wireVersion {
		return errVersion
	}
	if b[1] != kindRecord {
		return fmt.Errorf("%w: kind %d", errCorrupt, b[1])
	}
	rest, err := readRecord(b[2:], r)
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		return fmt.Errorf("%w: %d bytes after the record", errCorrupt, len(rest))
	}
	return nil
}

// encodeState writes records, in order, up to MaxStateBytes, and reports
// how many it wrote.
func encodeState(records []ratelimit.Record) ([]byte, int) {
	b := make([]byte, 6, 6+len(records)*(recordHeaderBytes+counterBytes))
	b[0], b[1] = wireVersion, kindState
	n := 0
	for i := range records {
		if len(b)+maxRecordBytes > MaxStateBytes {
			break
		}
		b = appendRecord(b, &records[i])
		n++
	}
	binary.BigEndian.PutUint32(b[2:], uint32(n))
	return b, n
}

// decodeState calls visit for each record of a state. A corrupt state
// stops at the first bad record with an error; records before it were
// visited (each is valid on its own, and merging is idempotent).
func decodeState(b []byte, visit func(*ratelimit.Record)) (int, error) {
	if len(b) > MaxStateBytes {
		return 0, errOversized
	}
	if len(b) < 6 {
		return 0, fmt.Errorf("%w: state of %d bytes", errCorrupt, len(b))
	}
	if b[0] != wireVersion {
		return 0, errVersion
	}
	if b[1] != kindState {
		return 0, fmt.Errorf("%w: kind %d", errCorrupt, b[1])
	}
	count := binary.BigEndian.Uint32(b[2:])
	if count > MaxStateRecords {
		return 0, fmt.Errorf("%w: %d records, at most %d", errOversized, count, MaxStateRecords)
	}
	b = b[6:]
	var r ratelimit.Record
	r.Counters = make([]ratelimit.Counter, 0, maxCounters)
	for i := range int(count) {
		var err error
		if b, err = readRecord(b, &r); err != nil {
			return i, err
		}
		visit(&r)
	}
	if len(b) != 0 {
		return int(count), fmt.Errorf("%w: %d bytes after the records", errCorrupt, len(b))
	}
	return int(count), nil
}
