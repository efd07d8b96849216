package engine

import (
	"slices"
	"testing"
)

// topHeap keeps the n largest keys, whatever order they come in.
func TestTopHeapKeepsTheLargest(t *testing.T) {
	for _, tt := range []struct {
		name string
		n    int
		keys []int64
		want []int64 // largest first
	}{
		{"fewer than n", 5, []int64{3, 1, 2}, []int64{3, 2, 1}},
		{"ascending", 3, []int64{1, 2, 3, 4, 5, 6}, []int64{6, 5, 4}},
		{"descending", 3, []int64{6, 5, 4, 3, 2, 1}, []int64{6, 5, 4}},
		{"mixed with ties", 4, []int64{5, 0, 9, 5, 7, 0, 9, 1}, []int64{9, 9, 7, 5}},
		{"one", 1, []int64{4, 8, 2}, []int64{8}},
		{"none wanted", 0, []int64{4, 8}, nil},
		{"nothing offered", 3, nil, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newTopHeap(tt.n)
			conns := make(map[*Conn]int64)
			for _, k := range tt.keys {
				c := new(Conn)
				conns[c] = k
				h.offer(c, k)
			}
			var got []int64
			for _, e := range h.items {
				if conns[e.conn] != e.key {
					t.Fatalf("entry keeps key %d for a connection offered with %d", e.key, conns[e.conn])
				}
				got = append(got, e.key)
			}
			slices.Sort(got)
			slices.Reverse(got)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("kept %v, want %v", got, tt.want)
			}
		})
	}
}
