package enginetest

import (
	"bytes"
	"sync"
)

// Buffer is a bytes.Buffer that goroutines may share: the output of a
// command or the log a test searches (for a token that must not be
// there, say) while the server still writes to it.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
