package main

import (
	"fmt"
	"os"
	"testing"
)

// heraldEnv makes the test binary run as the herald command itself, with
// its arguments after "--": tests that need a real process (signals, exit
// codes) run it rather than building the binary.
const heraldEnv = "HERALD_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(heraldEnv) != "" {
		args := os.Args[1:]
		for i, a := range args {
			if a == "--" {
				args = args[i+1:]
				break
			}
		}
		os.Exit(run(args, os.Stdout, os.Stderr))
	}
	if spec := os.Getenv(sinkEnv); spec != "" {
		if err := runSink(spec); err != nil {
			fmt.Fprintln(os.Stderr, "sink:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}
