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
		{"token", "mint a development JWT for clients (HS256)", runToken},
		{"bench", "load-test a server: idle, fanout and storm scenarios", runBench},
		{"version", "print the version, VCS revision and Go version of this binary", runVersion},
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
	if args[0] == "--version" || args[0] == "-version" {
		args = append([]string{"version"}, args[1:]...)
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
	b.WriteString("\nRun 'herald <command> --help' for the flags of a command, and 'herald --version'\n")
	b.WriteString("(or 'herald version') for the build of this binary.\n\n")
	b.WriteString("Every flag can also be set in the environment, and each command has variables of\n")
	b.WriteString("its own, so that none leaks into another:\n")
	b.WriteString("  herald serve     HERALD_<FLAG>            e.g. --max-conns is HERALD_MAX_CONNS\n")
	b.WriteString("  any other        HERALD_<COMMAND>_<FLAG>  e.g. pub's --timeout is HERALD_PUB_TIMEOUT\n")
	b.WriteString("with the flag's name in capitals and _ for -. A flag on the command line wins over\n")
	b.WriteString("the environment.\n")
	io.WriteString(w, b.String())
}

// newFlagSet returns a flag set whose --help prints the command's purpose
// before its flags, each with the environment variable that also sets it.
// The set is named "herald NAME", from which flagCommand tells the command
// whose environment variables set it.
func newFlagSet(name, synopsis, about string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("herald "+name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		line := "herald " + name
		if synopsis != "" {
			line += " " + synopsis
		}
		fmt.Fprintf(out, "Usage: %s\n\n%s\n", line, about)
		hasFlags := false
		fs.VisitAll(func(*flag.Flag) { hasFlags = true })
		if hasFlags {
			fmt.Fprintf(out, "\nFlags (each can also be set in the environment, as shown; the command line wins):\n")
			printFlags(fs)
		}
	}
	return fs
}

// printFlags lists fs's flags like flag.PrintDefaults, in the --name form
// and with the environment variable of each.
func printFlags(fs *flag.FlagSet) {
	var b strings.Builder
	command := flagCommand(fs)
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
		fmt.Fprintf(&b, "\n      [$%s]\n", envName(command, f.Name))
	})
	io.WriteString(fs.Output(), b.String())
}

// envPrefix is how the environment variables of command's flags begin.
// herald serve, the daemon, takes HERALD_<FLAG>; every other command takes
// HERALD_<COMMAND>_<FLAG>, so that a variable meant for one command (say
// the server's HERALD_LOOPS) never changes another (herald bench --loops).
func envPrefix(command string) string {
	if command == "serve" {
		return "HERALD_"
	}
	return "HERALD_" + envWord(command) + "_"
}

// envName is the environment variable that sets flag name of command:
// serve's --max-conns is HERALD_MAX_CONNS, pub's --timeout is
// HERALD_PUB_TIMEOUT.
func envName(command, name string) string {
	return envPrefix(command) + envWord(name)
}

// envWord is name in capitals with _ for -.
func envWord(name string) string {
	return strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// flagCommand is the command whose flags fs holds, from the name newFlagSet
// gave it.
func flagCommand(fs *flag.FlagSet) string {
	return strings.TrimPrefix(fs.Name(), "herald ")
}

// parseFlags is parseArgs for a command that takes no arguments besides its
// flags: any left over is a usage error.
func parseFlags(fs *flag.FlagSet, args []string) error {
	rest, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		fmt.Fprintf(fs.Output(), "unexpected argument %q\n", rest[0])
		fs.Usage()
		return errUsage
	}
	return nil
}

// parseArgs sets fs's flags from the environment (see envName), then from
// the flags at the front of args, which win, and returns the arguments
// after the flags. It parses args once, so a flag that adds up (fs.Func,
// called for each occurrence) sees each occurrence once. It maps the flag
// package's errors to errUsage so that run does not print them twice;
// flag.ErrHelp is returned as is.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	command := flagCommand(fs)
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		name := envName(command, f.Name)
		if v, ok := os.LookupEnv(name); ok && envErr == nil {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("%s=%q: %v", name, v, err)
			}
		}
	})
	if envErr != nil {
		fmt.Fprintln(fs.Output(), envErr)
		return nil, errUsage
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, errUsage
	}
	return fs.Args(), nil
}
