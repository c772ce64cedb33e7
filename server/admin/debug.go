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

// registerDebug adds the profiling endpoints. They live on the admin
// listener only, which a Service never exposes.
func registerDebug(mux *http.ServeMux, o Options) {
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /debug/memstats", func(w http.ResponseWriter, _ *http.Request) {
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
	})
}

// openFiles counts this process's file descriptors (Linux); -1 elsewhere.
func openFiles() int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(entries)
}
