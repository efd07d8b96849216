package pubsub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// DefaultListen is where the embedded server accepts NATS clients unless
// Config.Listen says otherwise: the standard NATS port, loopback only, so
// that a fresh `herald serve` can be fed with `nats pub` on the same machine
// without exposing an unauthenticated server to the network.
const DefaultListen = "127.0.0.1:4222"

// embeddedReadyTimeout bounds how long Start waits for the embedded server
// to accept connections.
const embeddedReadyTimeout = 10 * time.Second

// jetStreamOptions turn on the embedded server's JetStream.
type jetStreamOptions struct {
	storeDir string // file storage; nats-server adds "jetstream/" under it
}

// startEmbedded starts an in-process nats-server listening on listen and
// waits until it accepts clients. Its logs go to log: warnings and errors at
// their own level, notices at debug, debug and trace not at all.
func startEmbedded(listen string, log *slog.Logger, js *jetStreamOptions) (*server.Server, error) {
	host, port, err := parseListen(listen)
	if err != nil {
		return nil, err
	}
	opts := &server.Options{
		Host:   host,
		Port:   port,
		NoSigs: true, // signals belong to Herald, not to a library
	}
	if js != nil {
		if err := os.MkdirAll(js.storeDir, 0o750); err != nil {
			return nil, fmt.Errorf("jetstream store: %w", err)
		}
		opts.JetStream = true
		opts.StoreDir = js.storeDir
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, err
	}
	sl := &serverLogger{log: log.With("component", "nats-server")}
	// Installing a logger before Start keeps nats-server from ever writing to
	// stdout/stderr, and our Fatalf does not exit the process as the server's
	// default logger would.
	ns.SetLoggerV2(sl, false, false, false)
	ns.Start()

	// ReadyForConnections only says "not yet"; a failed listen (port in use)
	// is reported through Fatalf, so poll both to fail fast with the reason.
	deadline := time.Now().Add(embeddedReadyTimeout)
	for {
		if ns.ReadyForConnections(50 * time.Millisecond) {
			return ns, nil
		}
		if msg := sl.fatal.Load(); msg != nil {
			ns.Shutdown()
			ns.WaitForShutdown()
			return nil, errors.New(*msg)
		}
		if time.Now().After(deadline) {
			ns.Shutdown()
			ns.WaitForShutdown()
			return nil, fmt.Errorf("not ready for connections after %v", embeddedReadyTimeout)
		}
	}
}

// parseListen turns "host:port" into nats-server options. Port 0 and -1 both
// mean "any free port": nats-server itself reads 0 as its default port 4222,
// which is never what a caller asking for port 0 wants.
func parseListen(listen string) (host string, port int, err error) {
	host, ps, err := net.SplitHostPort(listen)
	if err != nil {
		return "", 0, err
	}
	port, err = strconv.Atoi(ps)
	if err != nil || port < -1 || port > 65535 {
		return "", 0, fmt.Errorf("invalid port %q", ps)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	return host, port, nil
}

// embeddedClientURL is the URL other processes on this machine can use to
// reach the embedded server. An unspecified listen host (":4222",
// "0.0.0.0:4222") is replaced by loopback, which always reaches it.
func embeddedClientURL(ns *server.Server) string {
	u, err := url.Parse(ns.ClientURL())
	if err != nil {
		return ns.ClientURL()
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		return ns.ClientURL()
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		if ip != nil && ip.To4() == nil {
			host = "::1"
		} else {
			host = "127.0.0.1"
		}
		u.Host = net.JoinHostPort(host, port)
	}
	return u.String()
}

// serverLogger routes nats-server's logging to slog. Notices (startup
// banners, listen addresses) are debug-level noise for Herald; warnings and
// errors keep their level. The first Fatalf is remembered so that Start can
// return it instead of timing out.
type serverLogger struct {
	log   *slog.Logger
	fatal atomic.Pointer[string]
}

func (l *serverLogger) Noticef(format string, v ...any) {
	if !l.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	l.log.Debug(strings.TrimSpace(fmt.Sprintf(format, v...)))
}

func (l *serverLogger) Warnf(format string, v ...any) {
	l.log.Warn(strings.TrimSpace(fmt.Sprintf(format, v...)))
}

func (l *serverLogger) Errorf(format string, v ...any) {
	l.log.Error(strings.TrimSpace(fmt.Sprintf(format, v...)))
}

func (l *serverLogger) Fatalf(format string, v ...any) {
	msg := strings.TrimSpace(fmt.Sprintf(format, v...))
	l.fatal.CompareAndSwap(nil, &msg)
	l.log.Error(msg)
}

func (l *serverLogger) Debugf(format string, v ...any) {}

func (l *serverLogger) Tracef(format string, v ...any) {}
