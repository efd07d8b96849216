package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/herald-ws/herald/engine"
)

// The admin listener (--admin-listen) is a plain net/http server on its
// own goroutines, off the event loops, for operators: /metrics, the
// sockets furthest behind, the busiest channels and pprof. It is off by
// default and binds loopback unless told otherwise, because what it shows
// (users, addresses, profiles) is not for the public port.

// Limits of the debug listings.
const (
	adminDefaultLimit = 100
	adminMaxLimit     = 10_000
	// adminInspectTimeout bounds how long a listing waits for the loops;
	// a loop that does not answer within it is stuck, which is itself the
	// answer (503).
	adminInspectTimeout = 5 * time.Second
)

// resolveAdminAddr reads --admin-listen: a missing host means loopback
// (":9090" is 127.0.0.1:9090). It reports whether the address is reachable
// from other machines.
func resolveAdminAddr(addr string) (resolved string, public bool, err error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", false, fmt.Errorf("--admin-listen %q: want host:port or :port: %v", addr, err)
	}
	if port == "" {
		return "", false, fmt.Errorf("--admin-listen %q: no port", addr)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	ip := net.ParseIP(host)
	loopback := host == "localhost" || (ip != nil && ip.IsLoopback())
	return net.JoinHostPort(host, port), !loopback, nil
}

// adminServer is the running admin listener.
type adminServer struct {
	srv *http.Server
	ln  net.Listener
}

// startAdmin listens on addr (see resolveAdminAddr) and serves h's admin
// pages there until close.
func startAdmin(h *herald, addr string, log *slog.Logger) (*adminServer, error) {
	resolved, public, err := resolveAdminAddr(addr)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", resolved)
	if err != nil {
		return nil, fmt.Errorf("admin listener: %w", err)
	}
	if public {
		log.Warn("THE ADMIN LISTENER IS REACHABLE FROM OTHER MACHINES: it shows users, client addresses and profiles "+
			"and takes CPU profiles on request; bind it to loopback or firewall it", "addr", ln.Addr().String())
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(h.metrics.registry, promhttp.HandlerOpts{}))
	// /readyz here too: behind --reuseport the public port reaches
	// whichever process the kernel picks, this one only this process.
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		body, status, contentType := h.serveReady(nil, nil)
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		_, _ = w.Write(body)
	})
	mux.HandleFunc("GET /debug/connections", h.serveConnections)
	mux.HandleFunc("GET /debug/channels", h.serveChannels)
	// pprof's handlers on this mux only: importing net/http/pprof also
	// registers them on http.DefaultServeMux, which Herald never serves.
	// Not its cmdline: the command line may carry --auth-secret or a NATS
	// URL's password (pprof.Index answers it 404, an unknown profile).
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprint(w, "herald admin\n/metrics\n/readyz\n/debug/connections?sort=pending|age&limit=N\n/debug/channels?sort=subscribers&limit=N\n/debug/pprof/\n")
	})
	a := &adminServer{
		ln: ln,
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 5 * time.Second,
			IdleTimeout:       time.Minute,
			MaxHeaderBytes:    8 << 10,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
	}
	go func() {
		if err := a.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin listener stopped", "err", err)
		}
	}()
	log.Info("admin listening", "addr", ln.Addr().String())
	return a, nil
}

// Addr is the address the admin listener is bound to.
func (a *adminServer) Addr() string { return a.ln.Addr().String() }

func (a *adminServer) close(ctx context.Context) error {
	if err := a.srv.Shutdown(ctx); err != nil {
		_ = a.srv.Close()
		return fmt.Errorf("admin listener: %w", err)
	}
	return nil
}

// connectionJSON is one socket of /debug/connections.
type connectionJSON struct {
	Client      string   `json:"client"`
	Remote      string   `json:"remote"`
	User        string   `json:"user"`
	Channels    []string `json:"channels"`
	Format      string   `json:"format"`
	AgeSeconds  float64  `json:"age_seconds"`
	UnsentBytes int      `json:"unsent_bytes"`
}

// serveConnections answers /debug/connections?sort=pending|age&limit=N:
// the sockets furthest behind (or oldest), read from the loops.
func (h *herald) serveConnections(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := adminParams(q, "pending", "age")
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	sort := q.Get("sort")
	if sort == "" {
		sort = "pending"
	}
	order := engine.ByUnsent
	if sort == "age" {
		order = engine.ByAge
	}
	ctx, cancel := context.WithTimeout(r.Context(), adminInspectTimeout)
	defer cancel()
	rows, err := engine.TopConns(ctx, h.srv, order, limit, func(c *engine.Conn, v engine.ConnView) connectionJSON {
		d := h.hub.Describe(c)
		format := "json"
		switch {
		case d.Raw:
			format = "raw"
		case d.SSE:
			format = "sse"
		}
		if d.Channels == nil {
			d.Channels = []string{}
		}
		return connectionJSON{
			Client: d.Client, Remote: v.Remote, User: d.User, Channels: d.Channels, Format: format,
			AgeSeconds: v.Age.Seconds(), UnsentBytes: v.Unsent,
		}
	})
	if err != nil {
		http.Error(w, "reading the event loops: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, struct {
		Sort        string           `json:"sort"`
		Limit       int              `json:"limit"`
		Open        int64            `json:"open"`
		Connections []connectionJSON `json:"connections"`
	}{sort, limit, h.srv.Stats().Upgraded, rows})
}

// channelJSON is one channel of /debug/channels.
type channelJSON struct {
	Channel     string `json:"channel"`
	Subscribers int    `json:"subscribers"`
}

// serveChannels answers /debug/channels?sort=subscribers&limit=N: the
// channels with the most sockets in this process.
func (h *herald) serveChannels(w http.ResponseWriter, r *http.Request) {
	limit, err := adminParams(r.URL.Query(), "subscribers")
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), adminInspectTimeout)
	defer cancel()
	top, total, err := h.hub.TopChannels(ctx, h.srv, limit)
	if err != nil {
		http.Error(w, "reading the event loops: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	rows := make([]channelJSON, 0, len(top))
	for _, c := range top {
		rows = append(rows, channelJSON{c.Channel, c.Subscribers})
	}
	writeJSON(w, struct {
		Sort     string        `json:"sort"`
		Limit    int           `json:"limit"`
		Total    int           `json:"total"`
		Channels []channelJSON `json:"channels"`
	}{"subscribers", limit, total, rows})
}

// adminParams checks a listing's query: sort one of sorts (the first is
// the default), limit within bounds, nothing else. It returns the limit.
func adminParams(q url.Values, sorts ...string) (int, error) {
	for k, v := range q {
		switch k {
		case "sort", "limit":
			if len(v) > 1 {
				return 0, fmt.Errorf("%s given %d times", k, len(v))
			}
		default:
			return 0, fmt.Errorf("unknown parameter %q: want sort and limit", k)
		}
	}
	if s := q.Get("sort"); s != "" {
		ok := false
		for _, want := range sorts {
			ok = ok || s == want
		}
		if !ok {
			return 0, fmt.Errorf("sort %q: want one of %q", s, sorts)
		}
	}
	limit := adminDefaultLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > adminMaxLimit {
			return 0, fmt.Errorf("limit %q: want a whole number from 1 to %d", v, adminMaxLimit)
		}
		limit = n
	}
	return limit, nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client hung up: nothing to tell it
}
