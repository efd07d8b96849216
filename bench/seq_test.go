package bench

import "testing"

func TestSeqWindow(t *testing.T) {
	var w seqWindow
	steps := []struct {
		seq  uint64
		want seqClass
	}{
		{1, seqInOrder},
		{2, seqInOrder},
		{2, seqDuplicate},
		{5, seqInOrder}, // 3 and 4 missing so far
		{4, seqLate},
		{4, seqDuplicate},
		{3, seqLate},
		{1, seqDuplicate},
		{100, seqInOrder}, // a jump wider than the window
		{37, seqLate},     // 63 back: still inside
		{37, seqDuplicate},
		{36, seqLate}, // 64 back: outside, counted late
		{100, seqDuplicate},
		{101, seqInOrder},
	}
	for i, s := range steps {
		if got := w.observe(s.seq); got != s.want {
			t.Fatalf("step %d: seq %d is %d, want %d", i, s.seq, got, s.want)
		}
	}
}
