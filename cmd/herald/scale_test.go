package main

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/herald-ws/herald/pubsub/natstest"
)

// scripts/scale.sh at a small size, as CI can afford it: five Herald
// processes on one port against one nats-server, the bench's three
// scenarios, the table, and nothing left running. The README's figures
// come from the same script at 95,000 connections.
func TestScaleScript(t *testing.T) {
	if testing.Short() {
		t.Skip("runs five Herald processes and a bench: not with -short")
	}
	for _, tool := range []string{"jq", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("scripts/scale.sh needs %s: %v", tool, err)
		}
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// Ports of their own, so that a scale.sh run by hand at the defaults
	// does not meet this one.
	env := append(os.Environ(), "DIR="+dir, "HERALD="+self, heraldEnv+"=1", "GORACE=atexit_sleep_ms=0",
		"NATS_SERVER="+natstest.Binary(t), "CONNS=2000", "PROCS=5", "MESSAGES=50", "STEADY=3s", "STEADY_RATE=10000",
		"PORT=8250", "NATS_PORT=4450", "ADMIN_BASE=9250", "TIMEOUT=90s")
	script := func(arg string) (string, error) {
		cmd := exec.Command("../../scripts/scale.sh", arg)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := script("run")
	if err != nil {
		t.Fatalf("scale.sh: %v\n%s", err, out)
	}
	for _, want := range []string{
		"2,000 of 2,000",
		"| burst: delivered; missing, duplicated, out of order        | 100%; 0, 0, 0",
		"| steady: delivered; missing, duplicated                     | 100%; 0, 0",
		"stopped",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("scale.sh output lacks %q:\n%s", want, out)
		}
	}

	// The kernel spread the connections over all five processes, and the
	// bench summed all five.
	m := regexp.MustCompile(`\| idle: per process, peak +\| ([0-9 /]+) connections`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no per-process line:\n%s", out)
	}
	total := 0
	for _, f := range strings.Split(m[1], "/") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n == 0 {
			t.Errorf("a process without connections: %q", m[1])
		}
		total += n
	}
	// Peaks are sampled once a second, each at its own moment: a
	// connection retried while its first attempt was still counted, or a
	// readiness probe, can add a few.
	if total < 2000 || total > 2040 {
		t.Errorf("peaks per process %q sum to %d, want 2000 (up to 2%% more)", m[1], total)
	}
	var idle struct {
		Server struct {
			Source string `json:"source"`
		} `json:"server"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "idle.json"))
	if err != nil || json.Unmarshal(b, &idle) != nil {
		t.Fatalf("idle.json: %v %s", err, b)
	}
	if strings.Count(idle.Server.Source, "/proc/") != 5 || !strings.Contains(idle.Server.Source, "summed") {
		t.Errorf("server figures from %q, want five processes summed", idle.Server.Source)
	}

	// Everything it started is gone: every Herald of every scenario, and
	// NATS.
	for _, m := range regexp.MustCompile(`--server-pid ([0-9,]+)`).FindAllStringSubmatch(out, -1) {
		for _, f := range strings.Split(m[1], ",") {
			pid, _ := strconv.Atoi(f)
			if pid > 0 && syscall.Kill(pid, 0) == nil {
				t.Errorf("herald %d still running after scale.sh", pid)
			}
		}
	}
	if c, err := net.DialTimeout("tcp", "127.0.0.1:4450", time.Second); err == nil {
		c.Close()
		t.Error("nats-server still listening after scale.sh")
	}
	if out, err := script("stop"); err != nil || !strings.Contains(out, "nothing running") {
		t.Errorf("scale.sh stop after run: %v %q", err, out)
	}
}
