// Command herald is a WebSocket push server: it holds many mostly idle
// WebSocket connections and fans out messages published on NATS to the
// sockets subscribed to them.
//
// This package only wires the engine, pubsub and bench packages to command
// line flags; each subcommand lives in its own file.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// command is one herald subcommand.
type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"serve", "run the WebSocket server", runServe},
		{"pub", "publish one message on NATS, e.g. to try a running server", runPub},
		{"sub", "print the messages of channels, as a WebSocket client", runSub},
		{"demo", "publish synthetic stock prices for the demo page at /", runDemo},
		{"bench", "load-test a server: idle, fanout and storm scenarios", runBench},
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the command line args and returns the process exit code:
// 0 on success, 2 on a usage error, 1 on any other failure.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(args[1:], stdout, stderr)
		switch {
		case err == nil, errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			return 2
		}
		fmt.Fprintf(stderr, "herald %s: %v\n", c.name, err)
		return 1
	}
	fmt.Fprintf(stderr, "herald: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

// errUsage marks an error the flag package has already explained.
var errUsage = errors.New("usage error")

func usage(w io.Writer) {
	var b strings.Builder
	b.WriteString("Herald is a WebSocket push server: browsers and apps connect over plain WebSocket,\n")
	b.WriteString("services publish on NATS, and every socket subscribed to a channel receives the message.\n\n")
	b.WriteString("Usage:\n  herald <command> [flags]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(&b, "  %-8s %s\n", c.name, c.summary)
	}
	b.WriteString("\nRun 'herald <command> --help' for the flags of a command.\n")
	io.WriteString(w, b.String())
}

// newFlagSet returns a flag set whose --help prints the command's purpose
// before its flags, each with the environment variable that also sets it.
func newFlagSet(name, synopsis, about string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("herald "+name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: herald %s %s\n\n%s\n\nFlags (each can also be set in the environment, as shown):\n", name, synopsis, about)
		printFlags(fs)
	}
	return fs
}

// printFlags lists fs's flags like flag.PrintDefaults, in the --name form
// and with the environment variable of each.
func printFlags(fs *flag.FlagSet) {
	var b strings.Builder
	fs.VisitAll(func(f *flag.Flag) {
		kind, usage := flag.UnquoteUsage(f)
		fmt.Fprintf(&b, "  --%s", f.Name)
		if kind != "" {
			fmt.Fprintf(&b, " %s", kind)
		}
		fmt.Fprintf(&b, "\n      %s", strings.ReplaceAll(usage, "\n", "\n      "))
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" && !strings.Contains(usage, "(default") {
			fmt.Fprintf(&b, " (default %s)", f.DefValue)
		}
		fmt.Fprintf(&b, "\n      [$%s]\n", envName(f.Name))
	})
	io.WriteString(fs.Output(), b.String())
}

// envName is the environment variable that sets flag name:
// --max-conns is HERALD_MAX_CONNS.
func envName(name string) string {
	return "HERALD_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// parseFlags sets fs's flags from the environment, then from args, which
// win. It maps the flag package's errors to errUsage so that run does not
// print them twice.
func parseFlags(fs *flag.FlagSet, args []string) error {
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if v, ok := os.LookupEnv(envName(f.Name)); ok && envErr == nil {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("%s=%q: %v", envName(f.Name), v, err)
			}
		}
	})
	if envErr != nil {
		fmt.Fprintln(fs.Output(), envErr)
		return errUsage
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return errUsage
	}
	return nil
}
