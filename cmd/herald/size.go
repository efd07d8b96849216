package main

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
)

// byteSize is a flag value for a size in bytes written as a plain number or
// with a unit: 512, 64KiB, 1MiB, 2GiB (KB, MB and GB are read as the same
// powers of two, which is what people mean when sizing buffers).
type byteSize int64

var sizeUnits = []struct {
	suffix string
	shift  uint
}{
	{"KiB", 10}, {"MiB", 20}, {"GiB", 30},
	{"KB", 10}, {"MB", 20}, {"GB", 30},
	{"K", 10}, {"M", 20}, {"G", 30},
	{"B", 0},
}

func (s *byteSize) Set(v string) error {
	text := strings.TrimSpace(v)
	shift := uint(0)
	for _, u := range sizeUnits {
		if strings.HasSuffix(strings.ToUpper(text), strings.ToUpper(u.suffix)) {
			text, shift = strings.TrimSpace(text[:len(text)-len(u.suffix)]), u.shift
			break
		}
	}
	n, err := strconv.ParseInt(text, 10, 64)
	if err != nil || n < 0 || n > (1<<62)>>shift {
		return fmt.Errorf("%q is not a size: want bytes, optionally with KiB, MiB or GiB", v)
	}
	*s = byteSize(n << shift)
	return nil
}

func (s *byteSize) String() string {
	n := int64(*s)
	for _, u := range []struct {
		suffix string
		shift  uint
	}{{"GiB", 30}, {"MiB", 20}, {"KiB", 10}} {
		if n != 0 && n%(1<<u.shift) == 0 {
			return strconv.FormatInt(n>>u.shift, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

// sizeFlag defines a byteSize flag and returns a pointer to its value in
// bytes.
func sizeFlag(fs *flag.FlagSet, name string, def int64, usage string) *int64 {
	v := byteSize(def)
	fs.Var(&v, name, usage)
	return (*int64)(&v)
}
