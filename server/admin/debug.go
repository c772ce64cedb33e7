package admin

import (
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
)

// MemStats is the JSON document at /debug/memstats: what load and soak
// tools sample to tell a leak from noise. It is taken after a forced GC so
// that successive samples compare live memory, not garbage.
type MemStats struct {
	HeapInuseBytes  uint64 `json:"heap_inuse_bytes"`
	HeapAllocBytes  uint64 `json:"heap_alloc_bytes"`
	StackInuseBytes uint64 `json:"stack_inuse_bytes"`
	SysBytes        uint64 `json:"sys_bytes"`
	Goroutines      int    `json:"goroutines"`
	OpenFiles       int    `json:"open_files"`
	Sessions        int    `json:"sessions"`
}

// registerDebug adds the profiling endpoints, with --debug-endpoints only
// and for holders of the admin token only: a profile shows the process's
// memory and command line, and a CPU profile or trace costs CPU.
func registerDebug(mux *http.ServeMux, o Options) {
	mux.HandleFunc("GET /debug/pprof/", o.requireAdmin(pprof.Index))
	mux.HandleFunc("GET /debug/pprof/cmdline", o.requireAdmin(pprof.Cmdline))
	mux.HandleFunc("GET /debug/pprof/profile", o.requireAdmin(pprof.Profile))
	mux.HandleFunc("GET /debug/pprof/symbol", o.requireAdmin(pprof.Symbol))
	mux.HandleFunc("GET /debug/pprof/trace", o.requireAdmin(pprof.Trace))
	mux.HandleFunc("GET /debug/memstats", o.requireAdmin(func(w http.ResponseWriter, _ *http.Request) {
		// Each GC cycle halves at most the stacks that use under a quarter
		// of their size; a few cycles show the steady state a long-running
		// server reaches on its own.
		for range 3 {
			runtime.GC()
		}
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		writeJSON(w, http.StatusOK, MemStats{
			HeapInuseBytes: m.HeapInuse, HeapAllocBytes: m.HeapAlloc, StackInuseBytes: m.StackInuse,
			SysBytes: m.Sys, Goroutines: runtime.NumGoroutine(), OpenFiles: openFiles(),
			Sessions: o.Sessions.Len(),
		})
	}))
}

// openFiles counts this process's file descriptors (Linux); -1 elsewhere.
func openFiles() int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(entries)
}
