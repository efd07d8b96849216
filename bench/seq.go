package bench

// seqWindow follows the sequence numbers one connection receives on its
// channel. It remembers the highest number seen and which of the 64
// numbers below it arrived, which is enough to tell a duplicate from a
// late message without a bitmap over the whole run: Herald either
// delivers in order or loses messages, so anything further back than 64
// is counted late and fresh.
//
// Missing messages are not tracked here: the parent knows how many were
// published on each channel and subtracts what arrived.
type seqWindow struct {
	max  uint64 // highest sequence number seen; 0 before the first
	seen uint64 // bit i set: max-i has arrived (bit 0 is max itself)
}

// seqClass is what one arriving sequence number was.
type seqClass uint8

const (
	seqInOrder   seqClass = iota // above every number seen so far
	seqLate                      // below the highest, first time seen
	seqDuplicate                 // seen before
)

// observe records seq, which must be above 0.
func (w *seqWindow) observe(seq uint64) seqClass {
	if seq > w.max {
		if shift := seq - w.max; shift >= 64 {
			w.seen = 0
		} else {
			w.seen <<= shift
		}
		w.seen |= 1
		w.max = seq
		return seqInOrder
	}
	back := w.max - seq
	if back >= 64 {
		return seqLate
	}
	bit := uint64(1) << back
	if w.seen&bit != 0 {
		return seqDuplicate
	}
	w.seen |= bit
	return seqLate
}
