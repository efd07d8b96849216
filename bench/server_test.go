package bench

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseProc(t *testing.T) {
	rss, err := parseVmRSS([]byte("Name:\therald\nVmPeak:\t  99999 kB\nVmRSS:\t   34172 kB\nThreads:\t7\n"))
	if err != nil || rss != 34172<<10 {
		t.Fatalf("%d %v", rss, err)
	}
	// A command name with spaces and parentheses does not shift the fields.
	stat := "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 130 0 0 20 0 7 0 100 0 0"
	cpu, err := parseStatCPU([]byte(stat))
	if err != nil || cpu != 3800*time.Millisecond {
		t.Fatalf("%v %v", cpu, err)
	}
	if _, err := parseStatCPU([]byte("1234 (x) S 1")); err == nil {
		t.Fatal("short stat accepted")
	}
	if _, err := parseVmRSS([]byte("Name:\tx\n")); err == nil {
		t.Fatal("missing VmRSS accepted")
	}
	slab, err := parseMeminfo([]byte("MemTotal:       24609124 kB\nSlab:             160000 kB\nSReclaimable:     129180 kB\n"), "Slab:")
	if err != nil || slab != 160000<<10 {
		t.Fatalf("%d %v", slab, err)
	}
	if _, err := parseMeminfo([]byte("Slab: 12 pages\n"), "Slab:"); err == nil {
		t.Fatal("a size not in kB accepted")
	}
}

func TestProcProbeSelf(t *testing.T) {
	s, err := procProbe{pids: []int{os.Getpid()}}.sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.RSS < 1<<20 || s.CPU < 0 || !s.HaveSlab || s.Slab <= 0 {
		t.Fatalf("%+v", s)
	}
}

func TestMetricsProbe(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(strings.Join([]string{
			"# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.",
			"# TYPE process_cpu_seconds_total counter",
			"process_cpu_seconds_total 12.34",
			"process_resident_memory_bytes 3.3554432e+07",
			`herald_upgrades_refused_total{reason="conn_limit"} 3`,
		}, "\n")))
	}))
	defer srv.Close()
	p := metricsProbe{url: srv.URL + "/metrics", client: srv.Client()}
	s, err := p.sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.RSS != 32<<20 || s.CPU != 12340*time.Millisecond {
		t.Fatalf("%+v", s)
	}
	if _, err := parseProcessMetrics(strings.NewReader("herald_connections 5\n")); err == nil {
		t.Fatal("metrics without process figures accepted")
	}
}

// Several server processes (--reuseport) count as one server: their RSS
// and CPU time are summed.
func TestProcProbeSumsProcesses(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Skipf("no sleep to run: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	self := procProbe{pids: []int{os.Getpid()}}
	other := procProbe{pids: []int{cmd.Process.Pid}}
	both := procProbe{pids: []int{os.Getpid(), cmd.Process.Pid}}
	a, err := self.sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	b, err := other.sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s, err := both.sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// This process's RSS may move between samples; sleep's does not.
	if b.RSS <= 0 || s.RSS < b.RSS+a.RSS/2 || s.RSS > b.RSS+2*a.RSS || s.CPU < a.CPU {
		t.Fatalf("summed %+v from self %+v and sleep %+v", s, a, b)
	}
	if src := both.source(); !strings.Contains(src, "summed") || !strings.Contains(src, strconv.Itoa(cmd.Process.Pid)) {
		t.Fatalf("source %q", src)
	}
	if _, err := (procProbe{pids: []int{os.Getpid(), 1 << 30}}).sample(context.Background()); err == nil {
		t.Fatal("a process that does not exist was summed")
	}
}

func TestParseServerPIDs(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want []int
		err  string
	}{
		{"", nil, ""},
		{"0", nil, ""},
		{"123", []int{123}, ""},
		{"1, 2,3", []int{1, 2, 3}, ""},
		{"1,x", nil, "want a process id"},
		{"-4", nil, "want a process id"},
		{"7,7", nil, "given twice"},
	} {
		got, err := ParseServerPIDs(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: %v %v, want error %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("%q: %v %v, want %v", tt.in, got, err, tt.want)
		}
	}
}
