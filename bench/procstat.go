package bench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// cpuTicks returns utime+stime of a process (all its threads), in clock
// ticks, from the content of /proc/PID/stat.
func cpuTicks(stat []byte) (int64, error) {
	// The command name (field 2) is in parentheses and may hold spaces and
	// parentheses itself: the fields that follow start after the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("/proc stat: no ')' after the command name")
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state): utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc stat: %d fields after the command name, want at least 13", len(f))
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil || u < 0 || s < 0 {
		return 0, fmt.Errorf("/proc stat: utime %q, stime %q are not tick counts", f[11], f[12])
	}
	return u + s, nil
}

// memKB returns VmRSS and VmHWM (peak RSS) in KiB from the content of
// /proc/PID/status.
func memKB(status []byte) (rss, hwm int64, err error) {
	found := 0
	for _, line := range strings.Split(string(status), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		f := strings.Fields(val)
		if len(f) != 2 || f[1] != "kB" {
			return 0, 0, fmt.Errorf("/proc status: %s: %q is not a size in kB", key, strings.TrimSpace(val))
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || n < 0 {
			return 0, 0, fmt.Errorf("/proc status: %s: %q is not a size in kB", key, strings.TrimSpace(val))
		}
		if key == "VmRSS" {
			rss = n
		} else {
			hwm = n
		}
		found++
	}
	if found != 2 {
		return 0, 0, errors.New("/proc status: VmRSS or VmHWM missing (a kernel thread, or the process exited)")
	}
	return rss, hwm, nil
}

// procSample is one reading of a process's counters.
type procSample struct {
	Ticks    int64 // utime+stime
	RSS, HWM int64 // KiB
}

// sampleProc reads /proc/PID/stat and /proc/PID/status.
func sampleProc(pid int) (procSample, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procSample{}, fmt.Errorf("sample pid %d: %w", pid, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procSample{}, fmt.Errorf("sample pid %d: %w", pid, err)
	}
	t, err := cpuTicks(stat)
	if err != nil {
		return procSample{}, fmt.Errorf("sample pid %d: %w", pid, err)
	}
	rss, hwm, err := memKB(status)
	if err != nil {
		return procSample{}, fmt.Errorf("sample pid %d: %w", pid, err)
	}
	return procSample{Ticks: t, RSS: rss, HWM: hwm}, nil
}

// clockTicks returns the kernel's clock ticks per second (getconf CLK_TCK).
func clockTicks() (int64, error) {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err != nil {
		return 0, fmt.Errorf("getconf CLK_TCK: %w", err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("getconf CLK_TCK: %q is not a positive number", strings.TrimSpace(string(out)))
	}
	return n, nil
}
