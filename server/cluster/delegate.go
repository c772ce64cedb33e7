package cluster

import (
	"errors"

	"github.com/voicegateway/voicegateway/server/ratelimit"
)

// delegate is memberlist's view of the replicated state. Its methods run
// on memberlist's goroutines and never block on the network.
type delegate struct{ p *Peer }

func (d *delegate) NodeMeta(int) []byte { return nil }

// NotifyMsg applies one gossiped change. A message that is too large, of
// an unknown version or corrupt is dropped and counted; memberlist already
// dropped anything not sealed with the fleet's key.
func (d *delegate) NotifyMsg(b []byte) {
	m := d.p.metrics
	m.receivedBytes[trafficBroadcast].Add(uint64(len(b)))
	var r ratelimit.Record
	var counters [1]ratelimit.Counter
	r.Counters = counters[:0]
	if err := decodeMessage(b, &r); err != nil {
		m.drop(err)
		return
	}
	m.received.Add(1)
	d.p.limiter.Merge(&r)
}

// GetBroadcasts sends queued blocks before queued failure counts.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	msgs := d.p.blocks.GetBroadcasts(overhead, limit)
	used := 0
	for _, msg := range msgs {
		used += overhead + len(msg)
	}
	if limit-used > overhead {
		msgs = append(msgs, d.p.failures.GetBroadcasts(overhead, limit-used)...)
	}
	n := 0
	for _, msg := range msgs {
		n += len(msg)
	}
	d.p.metrics.sentBytes[trafficBroadcast].Add(uint64(n))
	return msgs
}

// LocalState is the full state for a push/pull: every IP that holds state,
// blocks first, up to MaxStateBytes.
func (d *delegate) LocalState(bool) []byte {
	records := d.p.limiter.Records(MaxStateRecords)
	b, n := encodeState(records)
	m := d.p.metrics
	m.stateBytes.Store(int64(len(b)))
	m.stateRecords.Store(int64(n))
	m.sentBytes[trafficState].Add(uint64(len(b)))
	if n < len(records) {
		m.stateTruncated.Add(1)
	}
	return b
}

// MergeRemoteState merges a peer's full state, record by record.
func (d *delegate) MergeRemoteState(b []byte, _ bool) {
	m := d.p.metrics
	m.receivedBytes[trafficState].Add(uint64(len(b)))
	d.p.mergeMu.Lock()
	defer d.p.mergeMu.Unlock()
	if _, err := decodeState(b, func(r *ratelimit.Record) { d.p.limiter.Merge(r) }); err != nil {
		m.drop(err)
		return
	}
	m.statesMerged.Add(1)
}

func (m *Metrics) drop(err error) {
	reason := reasonCorrupt
	switch {
	case errors.Is(err, errOversized):
		reason = reasonOversized
	case errors.Is(err, errVersion):
		reason = reasonVersion
	}
	m.dropped[reason].Add(1)
}
