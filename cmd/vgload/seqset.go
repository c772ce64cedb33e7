package main

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
