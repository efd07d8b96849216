package engine

import (
	"errors"

	"github.com/gobwas/ws"

	"github.com/herald-ws/herald/codec"
)

// Endpoint is a protocol spoken over WebSocket connections upgraded at one
// path (Config.Endpoints). The engine calls its methods on the event loop
// that owns the connection, one call at a time per loop, so an endpoint's
// per-loop state needs no lock; none of them may block.
//
// An endpoint never sees a socket: it reads complete, unmasked, validated
// messages and writes with Conn.Send and Conn.SendFrame. The engine keeps
// the rest: the handshake, fragmentation, control frames, limits, pings,
// the close handshake and draining.
type Endpoint interface {
	// Upgrade decides on an upgrade request that passed RFC 6455's checks,
	// Config.CheckOrigin and Config.CheckUpgrade, before any answer. req
	// and everything it points into are valid only during the call, but
	// c may be kept (and c.Session set) until Closed. Upgrade returns nil
	// to answer 101 at once; ErrAcceptLater to answer once it calls
	// c.Accept, or c.Refuse, later on c's loop (the engine answers 503
	// itself after Config.HandshakeTimeout); or the error to refuse with,
	// a *codec.HTTPError for its status (anything else is a 400).
	Upgrade(c *Conn, req *codec.Request) error
	// Message is one complete message from the client: text or binary,
	// reassembled from its fragments, unmasked, text checked for UTF-8.
	// payload is valid only during the call.
	Message(c *Conn, op ws.OpCode, payload []byte)
	// Closed says c is gone, after an Upgrade that did not refuse: drop
	// every reference to it. Nothing sent to c after its close frame or
	// refusal is written, so an endpoint may also learn it late.
	Closed(c *Conn)
}

// Opener is an Endpoint that wants to hear when a socket opens: Opened
// runs on c's loop right after the 101 is written and before any frame of
// the client is read, so what it sends is the first thing the client
// reads after the 101 (a greeting, say).
type Opener interface {
	Opened(c *Conn)
}

// Ticker is an Endpoint with work of its own to do on a clock, such as
// closing sockets whose credentials expired. Tick runs on each loop at
// every sweep of that loop's connections (at most a quarter of a second
// apart), so the endpoint needs no timer of its own per loop or per
// socket. It must be quick: every socket of the loop waits for it. An
// endpoint served at several paths (a WebSocket one and an event stream,
// say) ticks once.
type Ticker interface {
	Tick(l *Loop)
}

// ErrAcceptLater is what Endpoint.Upgrade returns to hold the 101 until it
// calls Conn.Accept.
var ErrAcceptLater = errors.New("engine: upgrade accepted later")

// echo is the endpoint at EchoPath: it sends every message back as it
// came, for conformance suites, compressed when the socket negotiated
// permessage-deflate (Autobahn's 12.x and 13.x cases).
type echo struct{}

func (echo) Upgrade(*Conn, *codec.Request) error { return nil }

func (echo) Message(c *Conn, op ws.OpCode, payload []byte) { c.SendMessage(op, payload) }

func (echo) Closed(*Conn) {}
