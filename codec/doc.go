// Package codec implements the WebSocket wire protocol Herald speaks: the
// HTTP/1.1 upgrade handshake of RFC 6455 section 4 and the framing of RFC 6455
// section 5, as pure functions from bytes to bytes.
//
// Nothing here performs I/O or knows about event loops: callers hand in
// whatever bytes have arrived so far and get back either a result, a
// "need more" answer, or an error that carries the HTTP status or WebSocket
// close code to answer with. Keeping the codec pure is what lets the engine
// parse in place from its network buffers, and what lets the fuzzers drive it
// directly.
//
// The hot paths (frame header parsing, unmasking, UTF-8 validation and frame
// encoding) allocate nothing; every Append function writes into a slice the
// caller owns, usually a pooled buffer.
package codec
