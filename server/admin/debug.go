package admin

import (
	"io"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"strings"

	"github.com/voicegateway/voicegateway/server/admin/adminapi"
	"github.com/voicegateway/voicegateway/server/config"
)

// registerDebug adds the profiling endpoints, with --debug-endpoints only
// and for holders of the admin token only: a profile shows the process's
// memory and command line, and a CPU profile or trace costs CPU.
func registerDebug(mux *http.ServeMux, o Options) {
	mux.HandleFunc("GET "+adminapi.PathPprof, o.requireAdmin(pprof.Index))
	mux.HandleFunc("GET "+adminapi.PathPprof+"cmdline", o.requireAdmin(cmdline))
	mux.HandleFunc("GET "+adminapi.PathPprof+"profile", o.requireAdmin(pprof.Profile))
	mux.HandleFunc("GET "+adminapi.PathPprof+"symbol", o.requireAdmin(pprof.Symbol))
	mux.HandleFunc("GET "+adminapi.PathPprof+"trace", o.requireAdmin(pprof.Trace))
	mux.HandleFunc("GET "+adminapi.PathMemStats, o.requireAdmin(func(w http.ResponseWriter, _ *http.Request) {
		// Each GC cycle halves at most the stacks that use under a quarter
		// of their size; a few cycles show the steady state a long-running
		// server reaches on its own.
		for range 3 {
			runtime.GC()
		}
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		writeJSON(w, http.StatusOK, adminapi.MemStats{
			HeapInuseBytes: m.HeapInuse, HeapAllocBytes: m.HeapAlloc, StackInuseBytes: m.StackInuse,
			SysBytes: m.Sys, Goroutines: runtime.NumGoroutine(), OpenFiles: openFiles(),
			Sessions: o.Sessions.Len(),
		})
	}))
}

// cmdline is pprof.Cmdline with every URL's credentials and query values
// redacted: a flag such as --openai-url may carry a key.
func cmdline(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, strings.Join(config.RedactArgs(os.Args), "\x00"))
}

// openFiles counts this process's file descriptors (Linux); -1 elsewhere.
func openFiles() int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(entries)
}
