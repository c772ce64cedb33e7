package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// What vgload reads about the server process from /proc (Linux only): its
// resident memory, the CPU time it used, and whether it has exited. The
// server runs on the same machine by construction (loopback).

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat CPU times; it is 100
// on every Linux architecture Go supports.
const clockTicks = 100

// procRSS returns the resident set size of pid in bytes.
func procRSS(pid int) (uint64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseUint(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// cpuTimes is the CPU time a process has used, apart by where it ran: in
// its own code (user) and in the kernel on its behalf (system calls, the
// network stack). Two servers doing the same socket work spend about the
// same system time; what they differ in shows in user time.
type cpuTimes struct {
	user, system time.Duration
}

func (c cpuTimes) total() time.Duration { return c.user + c.system }

// procStat returns the state letter and the CPU times of pid.
func procStat(pid int) (state byte, cpu cpuTimes, err error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, cpuTimes{}, err
	}
	state, cpu, err = parseStat(string(data))
	if err != nil {
		return 0, cpuTimes{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return state, cpu, nil
}

// parseStat reads the state (field 3), utime (field 14) and stime (field
// 15) of a /proc/<pid>/stat line.
func parseStat(s string) (state byte, cpu cpuTimes, err error) {
	// The command name (field 2) may hold spaces and parentheses; the
	// fields after its last ')' are plain.
	end := strings.LastIndexByte(s, ')')
	if end < 0 {
		return 0, cpuTimes{}, errors.New("no command name")
	}
	f := strings.Fields(s[end+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, cpuTimes{}, errors.New("too few fields")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil || utime < 0 || stime < 0 {
		return 0, cpuTimes{}, fmt.Errorf("utime %q, stime %q are not tick counts", f[11], f[12])
	}
	ticks := func(n int64) time.Duration { return time.Duration(n) * time.Second / clockTicks }
	return f[0][0], cpuTimes{user: ticks(utime), system: ticks(stime)}, nil
}

// procCPU returns the CPU time pid has used so far.
func procCPU(pid int) (cpuTimes, error) {
	_, cpu, err := procStat(pid)
	return cpu, err
}

// procExited reports whether pid is gone or a zombie waiting to be reaped.
func procExited(pid int) bool {
	state, _, err := procStat(pid)
	return err != nil || state == 'Z' || state == 'X'
}

// cpuMeter measures the cores a process used over an interval: one read of
// its CPU times at the start and one at the end, shared by cores and
// systemCores, so that the total and its kernel part cover the same
// interval.
type cpuMeter struct {
	pid   int
	start cpuTimes
	wall0 time.Time

	// The end read, taken once by whichever of cores and systemCores is
	// called first; ok is false when it failed.
	ended, ok bool
	used      cpuTimes // over the interval
	wall      time.Duration
}

func startCPU(pid int) *cpuMeter {
	if pid <= 0 {
		return nil
	}
	cpu, err := procCPU(pid)
	if err != nil {
		return nil
	}
	return &cpuMeter{pid: pid, start: cpu, wall0: time.Now()}
}

// end reads the CPU times at the end of the interval, the first time only.
func (m *cpuMeter) end() {
	if m.ended {
		return
	}
	m.ended = true
	cpu, err := procCPU(m.pid)
	m.wall = time.Since(m.wall0)
	if err != nil || m.wall <= 0 {
		return
	}
	m.ok = true
	m.used = cpuTimes{user: cpu.user - m.start.user, system: cpu.system - m.start.system}
}

// cores returns CPU seconds (user and system) per wall second over the
// interval; -1 when unknown. The first call of cores or systemCores ends
// the interval.
func (m *cpuMeter) cores() float64 {
	if m == nil {
		return -1
	}
	m.end()
	if !m.ok {
		return -1
	}
	return m.used.total().Seconds() / m.wall.Seconds()
}

// systemCores returns the kernel's part of cores: system CPU seconds per
// wall second over the same interval; -1 when unknown.
func (m *cpuMeter) systemCores() float64 {
	if m == nil {
		return -1
	}
	m.end()
	if !m.ok {
		return -1
	}
	return m.used.system.Seconds() / m.wall.Seconds()
}
