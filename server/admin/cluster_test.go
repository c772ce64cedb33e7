package admin

import (
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/voicegateway/voicegateway/server/admin/adminapi"
)

// fakeCluster is a gossip peer's view, settled or not.
type fakeCluster struct{ settled atomic.Bool }

func (f *fakeCluster) Status() (int, string, bool) { return 3, "abc", f.settled.Load() }

// TestReadyWaitsForTheFleet: a replica that gossips is not ready before it
// settled (took its peers' limiter state), and /status says so and shows
// what it sees of the fleet.
func TestReadyWaitsForTheFleet(t *testing.T) {
	c := &fakeCluster{}
	h := newHarness(t, func(o *Options) { o.Cluster = c })
	if code, body, _ := h.do(http.MethodGet, adminapi.PathReadyz, nil); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before settling = %d %q, want 503", code, body)
	}
	var st adminapi.Status
	h.getJSON(adminapi.PathStatus, &st)
	if st.Ready || st.Cluster == nil || *st.Cluster != (adminapi.Cluster{Members: 3, MembersDigest: "abc"}) {
		t.Errorf("/status before settling: ready %v, cluster %+v", st.Ready, st.Cluster)
	}
	c.settled.Store(true)
	if code, _, _ := h.do(http.MethodGet, adminapi.PathReadyz, nil); code != http.StatusOK {
		t.Errorf("/readyz once settled = %d, want 200", code)
	}
	h.getJSON(adminapi.PathStatus, &st)
	if !st.Ready || !st.Cluster.Settled {
		t.Errorf("/status once settled: ready %v, cluster %+v", st.Ready, st.Cluster)
	}
}

// TestStatusWithoutGossip: a replica that does not gossip has no cluster
// in /status.
func TestStatusWithoutGossip(t *testing.T) {
	h := newHarness(t)
	var st adminapi.Status
	h.getJSON(adminapi.PathStatus, &st)
	if st.Cluster != nil || !st.Ready {
		t.Errorf("/status without gossip: ready %v, cluster %+v", st.Ready, st.Cluster)
	}
}
