//go:build !linux

package session

import (
	"context"
	"syscall"
	"time"
)

// Parker parks nothing on this platform: every session keeps its reader
// goroutine (see parker_linux.go).
type Parker struct {
	After         time.Duration
	Registry      *Registry
	ReleaseAfter  int
	ReleaseMemory func()
}

// DefaultParkAfter is how long a connection is quiet before its reader
// parks, where readers park.
const DefaultParkAfter = 2 * time.Second

// Run returns when ctx is done.
func (p *Parker) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

func (p *Parker) register(*Session, syscall.RawConn) (int32, bool) { return 0, false }

func (p *Parker) deregister(int32, syscall.RawConn) {}

func (p *Parker) parkedLen() int { return 0 }

func readable(uintptr) bool { return true }
