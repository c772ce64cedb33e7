// Package adminapi is the contract between the voice server's admin port
// and the processes that call it: the operator's poller, the preStop hook
// (`voice-server drain`), vgload and the end-to-end tests. It holds the
// path of every admin endpoint, the JSON documents they answer with, and a
// small Client, once, so that the server and its callers cannot drift
// apart: adding an endpoint touches this package, the server's handler
// (server/admin) and the caller, nothing else.
//
// It imports only the standard library, so that anything may import it
// without pulling in the server; server/admin imports it, never the
// reverse.
package adminapi

import "time"

// Paths of the admin endpoints (docs/operations.md, "Admin endpoints").
const (
	// PathHealthz is the liveness probe: 200 while the process runs, also
	// during a drain. Open.
	PathHealthz = "/healthz"
	// PathReadyz is the readiness probe: 200 while serving, 503 from the
	// moment termination begins. Open.
	PathReadyz = "/readyz"
	// PathStatus answers GET with a Status. Open.
	PathStatus = "/status"
	// PathMetrics answers GET with Prometheus metrics. Open.
	PathMetrics = "/metrics"
	// PathDrain begins the drain on POST and answers with a DrainResponse
	// once new sessions are refused. Admin token.
	PathDrain = "/drain"
	// PathMemStats answers GET with MemStats. Admin token, and only with
	// --debug-endpoints.
	PathMemStats = "/debug/memstats"
	// PathPprof is the prefix of the Go profiles (PathPprof + "heap"…).
	// Admin token, and only with --debug-endpoints.
	PathPprof = "/debug/pprof/"
)

// Phases of the drain, the values of Status.Phase, in the order a server
// goes through them.
const (
	PhaseServing     = "serving"
	PhaseTerminating = "terminating"
	PhaseRefusing    = "refusing"
	PhaseClosing     = "closing"
	PhaseStopped     = "stopped"
)

// Status is the document at GET /status: counts and the drain's progress,
// never a client address or a secret. The operator reads sessions and the
// drain from it.
type Status struct {
	Version      string `json:"version"`
	Backend      string `json:"backend"`
	Sessions     int    `json:"sessions"`
	SessionLimit int    `json:"session_limit"`
	// Ready is false from the moment termination begins.
	Ready bool `json:"ready"`
	// Draining is true from the moment termination begins.
	Draining bool `json:"draining"`
	// Phase is one of the Phase constants.
	Phase string `json:"phase"`
	// DrainStarted and DrainDeadline are set once the drain began: when
	// termination began, and when the sessions left are closed with 1012.
	DrainStarted  *time.Time `json:"drain_started,omitempty"`
	DrainDeadline *time.Time `json:"drain_deadline,omitempty"`
	// Notified is how many sessions were sent gateway.draining.
	Notified      int     `json:"notified"`
	UptimeSeconds float64 `json:"uptime_seconds"`
	// Cluster is the replica's view of the fleet's gossip; absent when the
	// replica does not gossip (no --cluster-listen).
	Cluster *Cluster `json:"cluster,omitempty"`
}

// Cluster is what one replica sees of the fleet's membership. Replicas that
// see the same fleet report the same Members and MembersDigest; the
// operator compares them.
type Cluster struct {
	// Members is the number of members seen alive, this one included.
	Members int `json:"members"`
	// MembersDigest is a SHA-256 prefix of the sorted member names.
	MembersDigest string `json:"members_digest"`
	// Settled is true once the replica took a peer's limiter state (or
	// found no peer, or waited its settle timeout); it is not ready before.
	Settled bool `json:"settled"`
}

// DrainResponse is the answer to POST /drain, sent once the server refuses
// new sessions: its status at that moment. It is a type of its own so that
// the drain may report more than the status without changing Status.
type DrainResponse struct {
	Status
}

// MemStats is the document at GET /debug/memstats: what load and soak
// tools sample to tell a leak from noise. The server takes it after forced
// GCs, so that successive samples compare live memory, not garbage.
type MemStats struct {
	HeapInuseBytes  uint64 `json:"heap_inuse_bytes"`
	HeapAllocBytes  uint64 `json:"heap_alloc_bytes"`
	StackInuseBytes uint64 `json:"stack_inuse_bytes"`
	SysBytes        uint64 `json:"sys_bytes"`
	Goroutines      int    `json:"goroutines"`
	// OpenFiles is -1 where the server cannot count them (not Linux).
	OpenFiles int `json:"open_files"`
	Sessions  int `json:"sessions"`
}

// Error codes of a refused admin request (ErrorResponse).
const (
	// CodeUnauthorized: no admin token, or a wrong one (HTTP 401).
	CodeUnauthorized = "unauthorized"
	// CodeAdminDisabled: the server has no admin token, so the endpoint is
	// off whatever is sent (HTTP 403).
	CodeAdminDisabled = "admin_disabled"
)

// ErrorResponse is the body of a refused admin request.
type ErrorResponse struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail says why an admin request was refused.
type ErrorDetail struct {
	// Code is one of the Code constants.
	Code    string `json:"code"`
	Message string `json:"message"`
}
