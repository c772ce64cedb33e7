package main

import (
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

// procStat returns the state letter and the user+system CPU time of pid.
func procStat(pid int) (state byte, cpu time.Duration, err error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) may hold spaces and parentheses; the
	// fields after its last ')' are plain.
	s := string(data)
	end := strings.LastIndexByte(s, ')')
	if end < 0 {
		return 0, 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(s[end+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	return f[0][0], time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// procCPU returns the CPU time pid has used so far.
func procCPU(pid int) (time.Duration, error) {
	_, cpu, err := procStat(pid)
	return cpu, err
}

// procExited reports whether pid is gone or a zombie waiting to be reaped.
func procExited(pid int) bool {
	state, _, err := procStat(pid)
	return err != nil || state == 'Z' || state == 'X'
}

// cpuMeter measures the cores a process used over an interval.
type cpuMeter struct {
	pid   int
	cpu0  time.Duration
	wall0 time.Time
}

func startCPU(pid int) *cpuMeter {
	if pid <= 0 {
		return nil
	}
	cpu, err := procCPU(pid)
	if err != nil {
		return nil
	}
	return &cpuMeter{pid: pid, cpu0: cpu, wall0: time.Now()}
}

// cores returns CPU seconds per wall second since start; -1 when unknown.
func (m *cpuMeter) cores() float64 {
	if m == nil {
		return -1
	}
	cpu, err := procCPU(m.pid)
	if err != nil {
		return -1
	}
	wall := time.Since(m.wall0)
	if wall <= 0 {
		return -1
	}
	return (cpu - m.cpu0).Seconds() / wall.Seconds()
}
