package bench

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// An overload sweep runs one step per rate on the same connections, here
// held by two child processes, and attributes each step's losses and
// duplicates to that step alone: message 3 (step one) goes twice, message
// 15 (step two) never.
func TestSweep(t *testing.T) {
	const conns, perStep = 200, 10
	r := startRouter(t, func(_ string, seq uint64) fault {
		switch seq {
		case 3:
			return twice
		case 15:
			return lose
		}
		return deliver
	})
	res := runT(t, Config{
		Scenario:     Fanout,
		URL:          r.url(),
		Conns:        conns,
		Rates:        []float64{20, 40, 80},
		Messages:     perStep,
		Rate:         1, // ignored by a sweep
		Duration:     5 * time.Second,
		Timeout:      60 * time.Second,
		Procs:        2,
		Loops:        1,
		Dialers:      8,
		ServerPIDs:   []int{os.Getpid()},
		Publish:      r.publish,
		ShardCommand: testShardCommand,
	})
	if len(res.Sweep) != 3 {
		t.Fatalf("%d steps, want 3", len(res.Sweep))
	}
	var delivered uint64
	for i, s := range res.Sweep {
		want := struct{ missing, dup uint64 }{}
		switch i {
		case 0:
			want.dup = conns
		case 1:
			want.missing = conns
		}
		if s.Rate != []float64{20, 40, 80}[i] || s.Published != perStep || s.Expected != perStep*conns {
			t.Errorf("step %d: rate %v published %d expected %d", i, s.Rate, s.Published, s.Expected)
		}
		if s.Missing != want.missing || s.Duplicated != want.dup || s.OutOfOrder != 0 || s.Delivered != perStep*conns-want.missing {
			t.Errorf("step %d: delivered %d missing %d duplicated %d out of order %d", i, s.Delivered, s.Missing, s.Duplicated, s.OutOfOrder)
		}
		if s.Latency.Count != int64(s.Delivered) || s.PerSecond <= 0 || s.Reads == 0 || s.PerRead < 1 {
			t.Errorf("step %d: latency %+v, %v/s, %d reads", i, s.Latency, s.PerSecond, s.Reads)
		}
		if s.CPU == nil || s.CPU.Unit != "delivery" || s.CPU.Count != s.Delivered {
			t.Errorf("step %d: cpu %+v", i, s.CPU)
		}
		delivered += s.Delivered
	}
	f := res.Fanout
	if f.Published != 3*perStep || f.Delivered != delivered || f.Missing != conns || f.Duplicated != conns || f.Latency.Count != int64(delivered) {
		t.Errorf("totals %+v", f)
	}
	if cpu := res.Server.CPU; cpu == nil || cpu.Count != delivered {
		t.Errorf("total cpu %+v", cpu)
	}
	var table, js bytes.Buffer
	if err := res.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"sweep:", "msg/s", "server CPU/delivery", "msgs/read"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q", want)
		}
	}
	if err := res.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back struct {
		Sweep []map[string]any `json:"sweep"`
	}
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back.Sweep) != 3 {
		t.Fatalf("json sweep: %v %v", back, err)
	}
	for _, key := range []string{"rate", "delivered_pct", "latency", "deliveries_per_second", "server_cpu", "messages_per_read"} {
		if _, ok := back.Sweep[2][key]; !ok {
			t.Errorf("a sweep step in JSON lacks %q: %v", key, back.Sweep[2])
		}
	}
}
