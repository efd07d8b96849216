package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/herald-ws/herald/engine/enginetest"
)

// unitFile is the systemd unit the README's production section ships.
const unitFile = "../../scripts/deploy/herald.service"

// TestSystemdUnit: the unit passes `systemd-analyze verify` (with its
// ExecStart pointed at a herald that exists here), keeps its sandboxing and
// open-file limit, and every HERALD_ variable its comments suggest is a
// real `herald serve` flag.
func TestSystemdUnit(t *testing.T) {
	unit, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"LimitNOFILE=", "DynamicUser=yes", "ProtectSystem=strict", "NoNewPrivileges=yes",
		"CapabilityBoundingSet=\n", "SystemCallFilter=@system-service", "KillSignal=SIGTERM", "ExecStart=/usr/local/bin/herald serve\n"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit has no %q", want)
		}
	}

	var help enginetest.Buffer
	run([]string{"serve", "--help"}, &help, &help)
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^  --([a-z0-9-]+)`).FindAllStringSubmatch(help.String(), -1) {
		flags[envName("serve", m[1])] = true
	}
	suggested := regexp.MustCompile(`(?m)^#\s+(HERALD_[A-Z0-9_]+)=`).FindAllStringSubmatch(string(unit), -1)
	if len(suggested) == 0 {
		t.Error("the unit's comments suggest no HERALD_ setting")
	}
	for _, m := range suggested {
		if !flags[m[1]] {
			t.Errorf("the unit suggests %s, which is no herald serve flag", m[1])
		}
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("systemd-analyze not found (Debian package systemd)")
		}
		t.Skip("systemd-analyze not found (Debian package systemd)")
	}
	// verify checks that ExecStart's program exists: point it at this test
	// binary, which is herald.
	dir := t.TempDir()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	local := strings.Replace(string(unit), "ExecStart=/usr/local/bin/herald ", "ExecStart="+self+" ", 1)
	path := filepath.Join(dir, "herald.service")
	if err := os.WriteFile(path, []byte(local), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
