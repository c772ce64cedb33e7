package session

import (
	"context"
	"errors"
	"os"
	"runtime/debug"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Parker holds the readers of quiet sessions without a goroutine each. A
// session whose client has sent nothing for After, with nothing left to
// read, parks: its reader goroutine registers the connection with the
// Parker's epoll instance and returns. When the connection turns readable
// (a message, a ping, a close frame, the peer going away) the Parker starts
// a goroutine that continues the session where it stopped; so does the
// session's ending (a timeout, a revocation, the drain), which takes the
// connection back itself. An idle session then costs no goroutine and
// no stack, only its heap.
//
// One goroutine (Run) waits on the epoll instance and, every After/2,
// looks for readers that have been waiting long enough and asks them to
// park. Go's own netpoller keeps its registration of every connection; a
// descriptor may be in both epoll sets. A Parker that does not run parks
// nothing.
type Parker struct {
	// After is how long a session's connection must be quiet, both
	// ways, before its reader parks; 0 means DefaultParkAfter.
	After time.Duration
	// Registry holds the sessions it looks at.
	Registry *Registry

	// ReleaseAfter is how many sessions must park before the memory their
	// readers left behind is handed back (see releaseAfterWave); 0 means
	// DefaultReleaseAfter.
	ReleaseAfter int
	// ReleaseMemory hands free memory back to the operating system; nil
	// means debug.FreeOSMemory.
	ReleaseMemory func()

	mu      sync.Mutex
	running bool
	epfd    int
	parked  map[int32]*Session
	next    int32
	// sinceRelease counts the sessions parked since the last release, and
	// sinceSweep those parked since the last sweep.
	sinceRelease, sinceSweep int
	// candidates is the sweep's reused list of readers to ask.
	candidates []*Session

	// lastRelease is when memory was last handed back (Run's goroutine
	// only); releasing is the release under way, which Run waits for.
	lastRelease, waveStart time.Time
	releasing              sync.WaitGroup
}

// DefaultReleaseAfter is how many sessions a wave of parking takes before
// the Parker hands memory back.
const DefaultReleaseAfter = 256

// releaseGap is the least time between two releases: each is a garbage
// collection of the whole heap.
const releaseGap = 10 * time.Second

// longestWave is how long sessions may go on parking before memory is
// handed back anyway.
const longestWave = time.Minute

// DefaultParkAfter is how long a connection is quiet before its reader
// parks: long enough that a talking client (a message every 20 ms, a
// pause between turns) keeps its goroutine, short enough that an idle
// session gives it back within seconds.
const DefaultParkAfter = 2 * time.Second

// firstToken is the lowest epoll token a parked connection gets.
const firstToken = 1

func (p *Parker) after() time.Duration {
	if p.After > 0 {
		return p.After
	}
	return DefaultParkAfter
}

// Run waits for parked connections to turn readable until ctx is done,
// then hands every still parked session back to a goroutine of its own
// and parks no more. It is one of the server's loops.
//
// The wait goes through Go's netpoller (the epoll instance is itself a
// pollable descriptor, readable while it holds a ready event), never a
// blocking epoll_wait: a goroutine blocked in a system call keeps its P
// until sysmon takes it back, which with GOMAXPROCS=1 froze every other
// goroutine, timers included, for up to 20 ms each time the loop went
// back to waiting (p99 echo lateness 13-16 ms at 300 talking sessions
// on one core against 2.4 ms on two; docs/benchmarks.md).
func (p *Parker) Run(ctx context.Context) error {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		return err
	}
	// A non-blocking descriptor makes a pollable File; from here on ep
	// owns epfd.
	ep := os.NewFile(uintptr(epfd), "parker-epoll")
	rc, err := ep.SyscallConn()
	if err != nil {
		_ = ep.Close()
		return err
	}
	p.mu.Lock()
	p.running, p.epfd, p.parked = true, epfd, map[int32]*Session{}
	p.mu.Unlock()
	// A deadline in the past ends the wait at once; os.File makes that
	// safe even as the loop closes ep.
	stopWaiting := context.AfterFunc(ctx, func() { _ = ep.SetReadDeadline(pastDeadline) })
	defer stopWaiting()

	events := make([]unix.EpollEvent, 128)
	interval := p.after() / 2
	nextSweep := time.Now().Add(interval)
	for {
		if err := ep.SetReadDeadline(nextSweep); err != nil {
			p.shutdown(ep)
			return err
		}
		// After the deadline is set: a stop that came before it would
		// have been overwritten by it.
		if ctx.Err() != nil {
			break
		}
		var n int
		var waitErr error
		err := rc.Read(func(fd uintptr) bool {
			// Never blocks (timeout 0). Returning false waits for the
			// instance to turn readable, which it does for any event
			// that arrives from now on: RawConn.Read cleared the old
			// readiness before this call, not after it.
			n, waitErr = unix.EpollWait(int(fd), events, 0)
			if errors.Is(waitErr, unix.EINTR) {
				n, waitErr = 0, nil
				return true // the loop looks again
			}
			return n > 0 || waitErr != nil
		})
		if err == nil && waitErr != nil {
			err = waitErr
		}
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			p.shutdown(ep)
			return err
		}
		for _, ev := range events[:max(n, 0)] {
			p.mu.Lock()
			s := p.parked[ev.Fd]
			delete(p.parked, ev.Fd)
			p.mu.Unlock()
			if s != nil {
				s.unpark()
			}
		}
		if !time.Now().Before(nextSweep) {
			p.sweep()
			p.releaseAfterWave(time.Now())
			nextSweep = time.Now().Add(interval)
		}
	}
	p.shutdown(ep)
	return nil
}

// shutdown stops parking and continues every parked session on a
// goroutine, as readable connections are.
func (p *Parker) shutdown(ep *os.File) {
	p.mu.Lock()
	p.running = false
	left := p.parked
	p.parked = nil
	p.mu.Unlock()
	for _, s := range left {
		s.unpark()
	}
	p.releasing.Wait()
	// No registration is added any more: the instance can go.
	p.mu.Lock()
	_ = ep.Close()
	p.epfd = -1
	p.mu.Unlock()
}

// releaseAfterWave hands memory back once a wave of parking is over (or
// has lasted longestWave). A
// reader that parks leaves its goroutine's stack and its read buffer
// behind: free memory the runtime keeps until a garbage collection runs,
// and a server whose sessions are all quiet allocates too little to start
// one (Go forces one every two minutes). 2,000 sessions that connected
// and went quiet held 60 MB of RSS for those two minutes against 17 MB
// of heap in use (docs/benchmarks.md). So after at least ReleaseAfter
// sessions parked and a sweep saw no more park, at most once per
// releaseGap, the free memory goes back, on a goroutine of its own so
// that parked sessions still wake meanwhile.
func (p *Parker) releaseAfterWave(now time.Time) {
	wave := p.ReleaseAfter
	if wave <= 0 {
		wave = DefaultReleaseAfter
	}
	p.mu.Lock()
	quiet := p.sinceSweep == 0
	p.sinceSweep = 0
	n := p.sinceRelease
	p.mu.Unlock()
	if n < wave || now.Sub(p.lastRelease) < releaseGap {
		return
	}
	if !quiet {
		// Still parking: wait for the wave to end, unless sessions
		// never stop parking (churn), then release every longestWave.
		if p.waveStart.IsZero() {
			p.waveStart = now
		}
		if now.Sub(p.waveStart) < longestWave {
			return
		}
	}
	p.mu.Lock()
	p.sinceRelease -= n
	p.mu.Unlock()
	p.lastRelease, p.waveStart = now, time.Time{}
	release := p.ReleaseMemory
	if release == nil {
		release = debug.FreeOSMemory
	}
	p.releasing.Wait() // the one before is long done (releaseGap)
	p.releasing.Add(1)
	go func() {
		defer p.releasing.Done()
		release()
	}()
}

// sweep asks the readers that have waited a whole After on a quiet
// connection to park.
func (p *Parker) sweep() {
	if p.Registry == nil {
		return
	}
	after := p.after()
	p.candidates = p.Registry.appendWaiting(p.candidates[:0])
	for i, s := range p.candidates {
		if s.opts.Clock.Since(time.Unix(0, s.lastAct.Load())) >= after {
			s.kick()
		}
		p.candidates[i] = nil
	}
}

// register adds the connection of a session whose reader parks; false
// when the Parker does not run (the reader goes on waiting itself).
func (p *Parker) register(s *Session, rc syscall.RawConn) (token int32, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.running {
		return 0, false
	}
	for {
		p.next++
		if p.next < firstToken {
			p.next = firstToken
		}
		if _, used := p.parked[p.next]; !used {
			break
		}
	}
	token = p.next
	var ctlErr error
	err := rc.Control(func(fd uintptr) {
		// Level-triggered and one-shot: bytes that arrived before the
		// registration wake the session at once, and each registration
		// wakes it once.
		ctlErr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd),
			&unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: token})
	})
	if err != nil || ctlErr != nil {
		return 0, false
	}
	p.parked[token] = s
	p.sinceRelease++
	p.sinceSweep++
	return token, true
}

// deregister removes a parked connection's registration, before its
// descriptor may be closed (a closed descriptor leaves the epoll set by
// itself, and its number may be reused).
func (p *Parker) deregister(token int32, rc syscall.RawConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.parked, token)
	if !p.running {
		// Never started, or shut down (its epoll instance is closed;
		// descriptor 0 is a valid one, so epfd itself cannot tell).
		return
	}
	// Control fails on a closed connection: nothing is left to remove.
	_ = rc.Control(func(fd uintptr) {
		_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
	})
}

// parkedLen is how many sessions are parked now.
func (p *Parker) parkedLen() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.parked)
}

// readable reports whether a read on fd would not block: bytes, the end of
// the stream or an error are waiting. It peeks without taking anything.
func readable(fd uintptr) bool {
	var b [1]byte
	_, _, errno := unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
		unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	return errno != unix.EAGAIN
}
