package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
)

// buildTime is when the binary was built, if the build says so; the Go
// toolchain does not record it by itself:
//
//	go build -ldflags "-X main.buildTime=$(date -u +%Y-%m-%dT%H:%M:%SZ)" ./cmd/herald
var buildTime string

func runVersion(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("version", "", `Prints the version of this binary: its module version, the VCS revision it
was built from and whether that tree had uncommitted changes, the revision's
commit time, the build time if the build recorded one, and the Go version
it was built with. 'herald --version' is the same.`, stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = nil
	}
	_, err := io.WriteString(stdout, versionText(bi, buildTime))
	return err
}

// versionText describes the build bi (nil when the binary has none) and
// built (a build time, or ""):
//
//	herald v1.2.0
//	  module    github.com/herald-ws/herald
//	  revision  4f1c2a9e0d7b36c5a8e1f2d3c4b5a6978e0f1d2c (modified)
//	  committed 2025-06-01T12:00:00Z
//	  built     2025-06-02T08:00:00Z
//	  go        go1.26.0 linux/amd64
//
// A line whose value is unknown is left out, except revision, which says
// it is unknown.
func versionText(bi *debug.BuildInfo, built string) string {
	var b strings.Builder
	line := func(key, value string) { fmt.Fprintf(&b, "  %-9s %s\n", key, value) }
	goVersion := runtime.Version()
	if bi == nil {
		b.WriteString("herald: version unknown: this binary has no build information\n")
	} else {
		version := bi.Main.Version
		if version == "" {
			version = "(devel)"
		}
		fmt.Fprintf(&b, "herald %s\n", version)
		if bi.Main.Path != "" {
			line("module", bi.Main.Path)
		}
		settings := map[string]string{}
		for _, s := range bi.Settings {
			settings[s.Key] = s.Value
		}
		if rev := settings["vcs.revision"]; rev != "" {
			switch settings["vcs.modified"] {
			case "true":
				rev += " (modified)"
			case "false":
				rev += " (clean)"
			}
			line("revision", rev)
		} else {
			line("revision", "unknown (built without VCS information)")
		}
		if t := settings["vcs.time"]; t != "" {
			line("committed", t)
		}
		if bi.GoVersion != "" {
			goVersion = bi.GoVersion
		}
	}
	if built != "" {
		line("built", built)
	}
	line("go", goVersion+" "+runtime.GOOS+"/"+runtime.GOARCH)
	return b.String()
}
