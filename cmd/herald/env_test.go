package main

import (
	"bytes"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/herald-ws/herald/bench"
)

func TestEnvName(t *testing.T) {
	for _, tt := range []struct{ command, flag, want string }{
		{"serve", "max-conns", "HERALD_MAX_CONNS"},
		{"serve", "loops", "HERALD_LOOPS"},
		{"pub", "timeout", "HERALD_PUB_TIMEOUT"},
		{"sub", "timeout", "HERALD_SUB_TIMEOUT"},
		{"demo", "rate", "HERALD_DEMO_RATE"},
		{"bench", "loops", "HERALD_BENCH_LOOPS"},
		{"bench", "handshake-timeout", "HERALD_BENCH_HANDSHAKE_TIMEOUT"},
	} {
		if got := envName(tt.command, tt.flag); got != tt.want {
			t.Errorf("envName(%q, %q) = %q, want %q", tt.command, tt.flag, got, tt.want)
		}
	}
}

// TestEnvParseArgs: a command's flag set reads its own variables only, and
// the command line wins over them.
func TestEnvParseArgs(t *testing.T) {
	parse := func(t *testing.T, command string, args ...string) (time.Duration, []string) {
		t.Helper()
		fs := newFlagSet(command, "[flags] ARG", "About.", io.Discard)
		timeout := fs.Duration("timeout", 5*time.Second, "")
		rest, err := parseArgs(fs, args)
		if err != nil {
			t.Fatalf("herald %s %q: %v", command, args, err)
		}
		return *timeout, rest
	}
	t.Setenv("HERALD_TIMEOUT", "1s")
	for _, command := range []string{"pub", "sub", "demo", "bench"} {
		if got, _ := parse(t, command); got != 5*time.Second {
			t.Errorf("HERALD_TIMEOUT=1s: herald %s --timeout is %v, want the default 5s", command, got)
		}
	}
	if got, _ := parse(t, "serve"); got != time.Second {
		t.Errorf("HERALD_TIMEOUT=1s: herald serve --timeout is %v, want 1s", got)
	}
	t.Setenv("HERALD_PUB_TIMEOUT", "2s")
	if got, rest := parse(t, "pub", "subject", "payload"); got != 2*time.Second || len(rest) != 2 {
		t.Errorf("HERALD_PUB_TIMEOUT=2s: herald pub --timeout is %v, arguments %q; want 2s and 2 arguments", got, rest)
	}
	if got, _ := parse(t, "pub", "--timeout", "3s", "subject"); got != 3*time.Second {
		t.Errorf("HERALD_PUB_TIMEOUT=2s, --timeout 3s: herald pub --timeout is %v, want 3s", got)
	}
	if got, _ := parse(t, "sub"); got != 5*time.Second {
		t.Errorf("HERALD_PUB_TIMEOUT=2s: herald sub --timeout is %v, want the default 5s", got)
	}
}

// TestEnvTimeoutPerCommand runs pub and sub with a zero timeout in the
// environment, which they refuse as a usage error (exit 2) when it reaches
// them: HERALD_TIMEOUT must not, HERALD_PUB_TIMEOUT and HERALD_SUB_TIMEOUT
// must. When the timeout is left alone they try to connect to a port with
// nothing behind it, which fails at once (exit 1).
func TestEnvTimeoutPerCommand(t *testing.T) {
	natsURL := "nats://" + freeAddr(t)
	wsURL := "ws://" + freeAddr(t) + "/ws"
	for _, tt := range []struct {
		name string
		env  map[string]string
		args []string
		code int
	}{
		{"pub ignores HERALD_TIMEOUT", map[string]string{"HERALD_TIMEOUT": "0s"}, []string{"pub", "--nats", natsURL, "prices.AAPL", "1"}, 1},
		{"pub ignores HERALD_SUB_TIMEOUT", map[string]string{"HERALD_SUB_TIMEOUT": "0s"}, []string{"pub", "--nats", natsURL, "prices.AAPL", "1"}, 1},
		{"pub takes HERALD_PUB_TIMEOUT", map[string]string{"HERALD_PUB_TIMEOUT": "0s"}, []string{"pub", "--nats", natsURL, "prices.AAPL", "1"}, 2},
		{"pub --timeout wins", map[string]string{"HERALD_PUB_TIMEOUT": "0s"}, []string{"pub", "--nats", natsURL, "--timeout", "1s", "prices.AAPL", "1"}, 1},
		{"sub ignores HERALD_TIMEOUT", map[string]string{"HERALD_TIMEOUT": "0s"}, []string{"sub", wsURL}, 1},
		{"sub ignores HERALD_PUB_TIMEOUT", map[string]string{"HERALD_PUB_TIMEOUT": "0s"}, []string{"sub", wsURL}, 1},
		{"sub takes HERALD_SUB_TIMEOUT", map[string]string{"HERALD_SUB_TIMEOUT": "0s"}, []string{"sub", wsURL}, 2},
		{"sub --timeout wins", map[string]string{"HERALD_SUB_TIMEOUT": "0s"}, []string{"sub", "--timeout", "1s", wsURL}, 1},
		{"demo ignores HERALD_RATE", map[string]string{"HERALD_RATE": "0", "HERALD_DEMO_NATS": natsURL, "HERALD_DEMO_WAIT": "0s"}, []string{"demo"}, 1},
		{"demo takes HERALD_DEMO_RATE", map[string]string{"HERALD_DEMO_RATE": "0"}, []string{"demo"}, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var stdout, stderr bytes.Buffer
			code := run(tt.args, &stdout, &stderr)
			if code != tt.code {
				t.Errorf("%v herald %q: exit %d, want %d; stderr:\n%s", tt.env, tt.args, code, tt.code, stderr.String())
			}
			if tooShort := strings.Contains(stderr.String(), "must be positive") || strings.Contains(stderr.String(), "--rate 0"); tooShort != (tt.code == 2) {
				t.Errorf("%v herald %q: refused the zero value = %v, want %v; stderr:\n%s", tt.env, tt.args, tooShort, tt.code == 2, stderr.String())
			}
		})
	}
}

// TestEnvBadValueNamesItsVariable: a value that does not parse is a usage
// error that names the variable, and only the command's own variables are
// read: serve checks its flags before starting, so --help shows which.
func TestEnvBadValueNamesItsVariable(t *testing.T) {
	for _, tt := range []struct {
		env, args string
		code      int
		want      string // in stderr; "" wants no mention of the variable
	}{
		{"HERALD_LOOPS", "serve --help", 2, `HERALD_LOOPS="x": `},
		{"HERALD_BENCH_LOOPS", "serve --help", 0, ""},
		{"HERALD_BENCH_LOOPS", "bench idle", 2, `HERALD_BENCH_LOOPS="x": `},
		{"HERALD_LOOPS", "bench --help", 0, ""},
		{"HERALD_MAX_CONNS", "bench --help", 0, ""},
		{"HERALD_PUB_TIMEOUT", "pub prices.AAPL 1", 2, `HERALD_PUB_TIMEOUT="x": `},
		{"HERALD_SUB_PING", "sub ws://127.0.0.1:1/ws", 2, `HERALD_SUB_PING="x": `},
		{"HERALD_DEMO_RATE", "demo", 2, `HERALD_DEMO_RATE="x": `},
		{"HERALD_TIMEOUT", "pub --help", 0, ""},
		{"HERALD_TIMEOUT", "sub --help", 0, ""},
	} {
		t.Run(tt.env+" "+tt.args, func(t *testing.T) {
			t.Setenv(tt.env, "x")
			var stdout, stderr bytes.Buffer
			code := run(strings.Fields(tt.args), &stdout, &stderr)
			if code != tt.code {
				t.Errorf("%s=x herald %s: exit %d, want %d; stderr:\n%s", tt.env, tt.args, code, tt.code, stderr.String())
			}
			if tt.want != "" && !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("%s=x herald %s: stderr lacks %q:\n%s", tt.env, tt.args, tt.want, stderr.String())
			}
			if tt.want == "" && strings.Contains(stderr.String(), tt.env+"=") {
				t.Errorf("%s=x herald %s read the variable:\n%s", tt.env, tt.args, stderr.String())
			}
		})
	}
}

// helpEnvVars runs herald COMMAND --help and returns the environment
// variables its flags list.
func helpEnvVars(t *testing.T, command string) (help string, vars []string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := run([]string{command, "--help"}, &stdout, &stderr); code != 0 {
		t.Fatalf("herald %s --help: exit %d; stderr:\n%s", command, code, stderr.String())
	}
	for _, m := range regexp.MustCompile(`(?m)^      \[\$(\w+)\]$`).FindAllStringSubmatch(stderr.String(), -1) {
		vars = append(vars, m[1])
	}
	return stderr.String(), vars
}

// TestEnvHelp: each command's --help shows its own variables.
func TestEnvHelp(t *testing.T) {
	for _, tt := range []struct {
		command string
		want    []string
		notWant []string
	}{
		{"serve", []string{"HERALD_MAX_CONNS", "HERALD_LOOPS", "HERALD_NATS"}, []string{"HERALD_SERVE_MAX_CONNS"}},
		{"bench", []string{"HERALD_BENCH_LOOPS", "HERALD_BENCH_TIMEOUT", "HERALD_BENCH_NATS"}, []string{"HERALD_LOOPS", "HERALD_TIMEOUT"}},
		{"pub", []string{"HERALD_PUB_TIMEOUT", "HERALD_PUB_NATS"}, []string{"HERALD_TIMEOUT", "HERALD_NATS"}},
		{"sub", []string{"HERALD_SUB_TIMEOUT", "HERALD_SUB_CHANNEL"}, []string{"HERALD_TIMEOUT"}},
		{"demo", []string{"HERALD_DEMO_RATE", "HERALD_DEMO_NATS"}, []string{"HERALD_RATE", "HERALD_NATS"}},
	} {
		help, _ := helpEnvVars(t, tt.command)
		for _, v := range tt.want {
			if !strings.Contains(help, "[$"+v+"]") {
				t.Errorf("herald %s --help does not show $%s:\n%s", tt.command, v, help)
			}
		}
		for _, v := range tt.notWant {
			if strings.Contains(help, "[$"+v+"]") {
				t.Errorf("herald %s --help shows $%s:\n%s", tt.command, v, help)
			}
		}
	}
	var usage bytes.Buffer
	run([]string{"--help"}, &usage, &usage)
	for _, want := range []string{"HERALD_<FLAG>", "HERALD_<COMMAND>_<FLAG>", "HERALD_PUB_TIMEOUT"} {
		if !strings.Contains(usage.String(), want) {
			t.Errorf("herald --help does not explain the environment (%s):\n%s", want, usage.String())
		}
	}
}

// TestEnvNoSharedVariables: every flag of every command has a variable of
// its own, under its command's prefix: none is shared between commands,
// none of serve's looks like another command's, and none is a variable
// herald uses for something else.
func TestEnvNoSharedVariables(t *testing.T) {
	reserved := map[string]bool{bench.ShardEnv: true, heraldEnv: true, sinkEnv: true}
	owner := map[string]string{}
	for _, c := range commands() {
		_, vars := helpEnvVars(t, c.name)
		for _, v := range vars {
			if !strings.HasPrefix(v, envPrefix(c.name)) {
				t.Errorf("herald %s: $%s lacks the prefix %s", c.name, v, envPrefix(c.name))
			}
			if other, ok := owner[v]; ok {
				t.Errorf("$%s sets a flag of both herald %s and herald %s", v, other, c.name)
			}
			owner[v] = c.name
			if reserved[v] {
				t.Errorf("herald %s: $%s is taken by herald itself", c.name, v)
			}
		}
	}
	for v, c := range owner {
		for _, other := range commands() {
			if c == "serve" && other.name != "serve" && strings.HasPrefix(v, envPrefix(other.name)) {
				t.Errorf("serve's $%s looks like a variable of herald %s", v, other.name)
			}
		}
	}
	if len(owner) == 0 {
		t.Fatal("no variables found in the commands' --help")
	}
}
