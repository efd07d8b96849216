package engine

import (
	"testing"
	"unsafe"
)

// Every byte of conn is paid once per connection, millions of times: keep
// it in Go's 64-byte allocation class. Past 64 bytes it would cost 80.
func TestConnFitsSixtyFourBytes(t *testing.T) {
	size := unsafe.Sizeof(Conn{})
	t.Logf("Conn is %d bytes", size)
	if size > 64 {
		t.Fatalf("Conn is %d bytes, over the 64-byte allocation class", size)
	}
}
