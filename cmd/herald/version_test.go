package main

import (
	"bytes"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

// versionFormat is what herald version prints, whatever the build recorded:
// under go test the main module is "(devel)" and there may be no VCS
// settings.
var versionFormat = regexp.MustCompile(`^herald (\(devel\)|v\S+)\n` +
	`(  module    \S+\n)?` +
	`  revision  ([0-9a-f]{7,64}( \((modified|clean)\))?|unknown \(built without VCS information\))\n` +
	`(  committed \S+\n)?` +
	`(  built     \S+\n)?` +
	`  go        .+ \w+/\w+\n$`)

// TestVersionBothSpellings: herald --version and herald version print the
// same thing, in the documented format, and exit 0.
func TestVersionBothSpellings(t *testing.T) {
	var outs []string
	for _, args := range [][]string{{"--version"}, {"version"}, {"-version"}} {
		var stdout, stderr bytes.Buffer
		code := run(args, &stdout, &stderr)
		if code != 0 || stderr.Len() != 0 {
			t.Fatalf("herald %q: exit %d, stderr %q; want 0 and silence", args, code, stderr.String())
		}
		out := stdout.String()
		if !versionFormat.MatchString(out) {
			t.Errorf("herald %q printed\n%s\nwhich does not match %s", args, out, versionFormat)
		}
		if !strings.Contains(out, runtime.Version()) {
			t.Errorf("herald %q does not name the Go version %s:\n%s", args, runtime.Version(), out)
		}
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Path != "" && !strings.Contains(out, "  module    "+bi.Main.Path+"\n") {
			t.Errorf("herald %q does not name the module %s:\n%s", args, bi.Main.Path, out)
		}
		outs = append(outs, out)
	}
	for _, out := range outs[1:] {
		if out != outs[0] {
			t.Errorf("the spellings disagree:\n%s\nand\n%s", outs[0], out)
		}
	}
}

func TestVersionUsage(t *testing.T) {
	for _, tt := range []struct {
		args []string
		code int
		want string // in stderr
	}{
		{[]string{"version", "--help"}, 0, "Usage: herald version\n\nPrints the version"},
		{[]string{"--version", "--help"}, 0, "Usage: herald version\n\nPrints the version"},
		{[]string{"version", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"--version", "--bogus"}, 2, "flag provided but not defined: -bogus"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(tt.args, &stdout, &stderr)
		if code != tt.code || stdout.Len() != 0 || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("herald %q: exit %d, stdout %q, stderr:\n%s\nwant exit %d and %q", tt.args, code, stdout.String(), stderr.String(), tt.code, tt.want)
		}
		if strings.Contains(stderr.String(), "Flags (") {
			t.Errorf("herald %q: usage announces flags the command does not have:\n%s", tt.args, stderr.String())
		}
	}
	var usage bytes.Buffer
	run([]string{"--help"}, &usage, &usage)
	if !regexp.MustCompile(`(?m)^  version +\S`).MatchString(usage.String()) {
		t.Errorf("herald --help does not list version among the commands:\n%s", usage.String())
	}
}

func TestVersionText(t *testing.T) {
	platform := " " + runtime.GOOS + "/" + runtime.GOARCH + "\n"
	full := &debug.BuildInfo{
		GoVersion: "go1.26.0",
		Main:      debug.Module{Path: "github.com/herald-ws/herald", Version: "v1.2.0"},
		Settings: []debug.BuildSetting{
			{Key: "GOOS", Value: "linux"},
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: "4f1c2a9e0d7b36c5a8e1f2d3c4b5a6978e0f1d2c"},
			{Key: "vcs.time", Value: "2025-06-01T12:00:00Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	clean := *full
	clean.Settings = append([]debug.BuildSetting(nil), full.Settings...)
	clean.Settings[4].Value = "false"
	for _, tt := range []struct {
		name  string
		bi    *debug.BuildInfo
		built string
		want  string
	}{
		{"full", full, "2025-06-02T08:00:00Z", "herald v1.2.0\n" +
			"  module    github.com/herald-ws/herald\n" +
			"  revision  4f1c2a9e0d7b36c5a8e1f2d3c4b5a6978e0f1d2c (modified)\n" +
			"  committed 2025-06-01T12:00:00Z\n" +
			"  built     2025-06-02T08:00:00Z\n" +
			"  go        go1.26.0" + platform},
		{"clean tree, no build time", &clean, "", "herald v1.2.0\n" +
			"  module    github.com/herald-ws/herald\n" +
			"  revision  4f1c2a9e0d7b36c5a8e1f2d3c4b5a6978e0f1d2c (clean)\n" +
			"  committed 2025-06-01T12:00:00Z\n" +
			"  go        go1.26.0" + platform},
		{"go test", &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Path: "github.com/herald-ws/herald", Version: "(devel)"}}, "",
			"herald (devel)\n" +
				"  module    github.com/herald-ws/herald\n" +
				"  revision  unknown (built without VCS information)\n" +
				"  go        go1.26.0" + platform},
		{"no build info", nil, "", "herald: version unknown: this binary has no build information\n" +
			"  go        " + runtime.Version() + platform},
	} {
		got := versionText(tt.bi, tt.built)
		if got != tt.want {
			t.Errorf("%s: got\n%s\nwant\n%s", tt.name, got, tt.want)
		}
		if tt.bi != nil && !versionFormat.MatchString(got) {
			t.Errorf("%s: %q does not match %s", tt.name, got, versionFormat)
		}
	}
}
