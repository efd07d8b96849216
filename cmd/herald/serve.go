package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/herald-ws/herald/codec"
	"github.com/herald-ws/herald/engine"
)

// echoMaxMessageSize is the message limit in echo mode unless one is given:
// the largest message Autobahn's test suite sends (case 9.1.6, 16 MiB), so
// that conformance runs pass with no extra flags.
const echoMaxMessageSize = 16 << 20

func runServe(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", "[flags]",
		"Runs the WebSocket server. Plain HTTP on the same port: GET /healthz answers 200.", stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "`address` to accept WebSocket and HTTP connections on (host:port)")
	echo := fs.Bool("echo", false, "serve /echo, which echoes every text and binary message back (for conformance suites such as Autobahn)")
	maxMessage := sizeFlag(fs, "max-message-size", 0,
		"largest message a client may send, summed over fragments, e.g. 64KiB, 1MiB; larger ones close the connection with 1009 (default 1MiB, or 16MiB with --echo)")
	maxHead := sizeFlag(fs, "max-header-size", codec.DefaultMaxHeadSize, "largest HTTP request head; larger ones are answered 431")
	loops := fs.Int("loops", 0, "event loops (threads serving sockets); 0 means one per CPU")
	handshakeTimeout := fs.Duration("handshake-timeout", 5*time.Second, "close connections that have not sent a complete HTTP request within this time")
	logLevel := fs.String("log-level", "info", "log `level`: debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "log `format`: text or json")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	if *maxMessage == 0 {
		*maxMessage = codec.DefaultMaxMessageSize
		if *echo {
			*maxMessage = echoMaxMessageSize
		}
	}

	srv, err := engine.New(engine.Config{
		Addr:             *listen,
		Loops:            *loops,
		MaxMessageSize:   *maxMessage,
		MaxHeadSize:      int(*maxHead),
		HandshakeTimeout: *handshakeTimeout,
		Echo:             *echo,
		Logger:           log,
	})
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "herald listening on %s\n", srv.Addr())

	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	got := <-sig
	log.Info("shutting down", "signal", got.String())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		<-sig // a second signal: do not wait any longer
		os.Exit(1)
	}()
	return srv.Stop(ctx)
}

// newLogger builds the process logger from the --log-level and --log-format
// flags.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}
