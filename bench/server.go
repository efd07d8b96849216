package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// serverSample is the server's resident memory and CPU time at one
// moment.
type serverSample struct {
	RSS int64         // bytes
	CPU time.Duration // user + system
	// Slab is the kernel's slab memory on this host, where socket
	// structures live; read only when the server runs here too.
	Slab     int64
	HaveSlab bool
	// Goroutines is the server's go_goroutines, from /metrics only.
	Goroutines     int64
	HaveGoroutines bool
	// HistoryReads is the server's herald_history_reads_total (reads of
	// its history streams), from /metrics only.
	HistoryReads     int64
	HaveHistoryReads bool
}

// serverProbe reads the server's resource use, from /proc when the bench
// knows the server's process, or from its /metrics otherwise.
type serverProbe interface {
	sample(ctx context.Context) (serverSample, error)
	source() string
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// procProbe reads /proc/PID of every server process and sums them: one
// Herald, or several sharing a port (--reuseport), counted as one server.
type procProbe struct{ pids []int }

func (p procProbe) source() string {
	paths := make([]string, len(p.pids))
	for i, pid := range p.pids {
		paths[i] = "/proc/" + strconv.Itoa(pid)
	}
	src := strings.Join(paths, " + ")
	if len(p.pids) > 1 {
		src += " (summed)"
	}
	return src
}

func (p procProbe) sample(context.Context) (serverSample, error) {
	var s serverSample
	for _, pid := range p.pids {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			return s, fmt.Errorf("server memory: %w", err)
		}
		rss, err := parseVmRSS(status)
		if err != nil {
			return s, fmt.Errorf("server memory: /proc/%d/status: %w", pid, err)
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return s, fmt.Errorf("server cpu: %w", err)
		}
		cpu, err := parseStatCPU(stat)
		if err != nil {
			return s, fmt.Errorf("server cpu: /proc/%d/stat: %w", pid, err)
		}
		s.RSS += rss
		s.CPU += cpu
	}
	meminfo, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return s, fmt.Errorf("kernel memory: %w", err)
	}
	if s.Slab, err = parseMeminfo(meminfo, "Slab:"); err != nil {
		return s, fmt.Errorf("kernel memory: /proc/meminfo: %w", err)
	}
	s.HaveSlab = true
	return s, nil
}

// parseVmRSS returns the VmRSS line of /proc/PID/status in bytes.
func parseVmRSS(status []byte) (int64, error) { return parseMeminfo(status, "VmRSS:") }

// parseMeminfo returns the line of /proc/meminfo or /proc/PID/status that
// starts with key, a size in kB, in bytes.
func parseMeminfo(text []byte, key string) (int64, error) {
	for line := range bytes.Lines(text) {
		rest, ok := bytes.CutPrefix(line, []byte(key))
		if !ok {
			continue
		}
		f := strings.Fields(string(rest))
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("unexpected %s line %q", key, line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s %w", key, err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("no %s line", key)
}

// parseStatCPU returns utime + stime from /proc/PID/stat. The command
// name in parentheses may hold spaces, so fields are counted from its
// closing parenthesis: utime and stime are fields 14 and 15 of the line,
// 12 and 13 after it.
func parseStatCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("no command name")
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("too few fields")
	}
	var ticks int64
	for _, v := range f[11:13] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("cpu ticks %q: %w", v, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// metricsProbe reads the Prometheus process metrics from the server's
// /metrics, for servers on another machine or without a known PID.
type metricsProbe struct {
	url    string
	client *http.Client
}

func (m metricsProbe) source() string { return m.url }

func (m metricsProbe) sample(ctx context.Context) (serverSample, error) {
	var s serverSample
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.url, nil)
	if err != nil {
		return s, fmt.Errorf("server metrics: %w", err)
	}
	resp, err := m.client.Do(req)
	if err != nil {
		return s, fmt.Errorf("server metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("server metrics: %s answered %s", m.url, resp.Status)
	}
	return parseProcessMetrics(io.LimitReader(resp.Body, 4<<20))
}

// parseProcessMetrics reads process_resident_memory_bytes and
// process_cpu_seconds_total from a Prometheus text exposition, and
// go_goroutines if it is there.
func parseProcessMetrics(r io.Reader) (serverSample, error) {
	var s serverSample
	var haveRSS, haveCPU bool
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		value, _, _ = strings.Cut(strings.TrimSpace(value), " ") // drop a timestamp
		switch name {
		case "process_resident_memory_bytes":
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				return s, fmt.Errorf("server metrics: %s: %w", name, err)
			}
			s.RSS, haveRSS = int64(v), true
		case "process_cpu_seconds_total":
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				return s, fmt.Errorf("server metrics: %s: %w", name, err)
			}
			s.CPU, haveCPU = time.Duration(v*float64(time.Second)), true
		case "go_goroutines":
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				return s, fmt.Errorf("server metrics: %s: %w", name, err)
			}
			s.Goroutines, s.HaveGoroutines = int64(v), true
		case "herald_history_reads_total":
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				return s, fmt.Errorf("server metrics: %s: %w", name, err)
			}
			s.HistoryReads, s.HaveHistoryReads = int64(v), true
		}
	}
	if err := sc.Err(); err != nil {
		return s, fmt.Errorf("server metrics: %w", err)
	}
	if !haveRSS || !haveCPU {
		return s, errors.New("server metrics: no process_resident_memory_bytes or process_cpu_seconds_total")
	}
	return s, nil
}
