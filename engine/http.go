package engine

import (
	"github.com/valyala/bytebufferpool"

	"github.com/herald-ws/herald/codec"
)

// serveHTTP answers a request for anything but a WebSocket endpoint. Herald
// shares its port with the few plain HTTP paths operators, load balancers
// and the demo page need, answers each request on its own connection and
// closes it.
func (c *Conn) serveHTTP(req *codec.Request) {
	path := string(req.Path)
	handler := c.loop.s.cfg.HTTP[path]
	if handler == nil && path != "/healthz" {
		c.answer(&codec.HTTPError{Status: 404, Reason: "not found"})
		return
	}
	if string(req.Method) != "GET" {
		c.answer(&codec.HTTPError{Status: 405, Reason: "method not allowed", Header: "Allow: GET\r\n"})
		return
	}
	if handler == nil {
		c.respond(200, "text/plain; charset=utf-8", []byte("ok\n"))
		return
	}
	body := bytebufferpool.Get()
	defer bytebufferpool.Put(body)
	var status int
	var contentType string
	body.B, status, contentType = handler(body.B[:0], req)
	c.respond(status, contentType, body.B)
}

// respond sends a complete HTTP answer and closes.
func (c *Conn) respond(status int, contentType string, body []byte) {
	out := bytebufferpool.Get()
	out.B = codec.AppendResponse(out.B, status, contentType, "", body)
	c.finish(out)
}
