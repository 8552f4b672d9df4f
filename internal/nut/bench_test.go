package nut_test

import (
	"context"
	"testing"

	"github.com/sundown-ups/sundown/internal/nut"
)

// BenchmarkGetVars measures the polling hot path: four variables in one
// pipelined round trip to an in-process nuttest server over loopback TCP.
func BenchmarkGetVars(b *testing.B) {
	s := newServer(b)
	c := dial(b, s.Addr(), nut.Options{})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		v, err := c.GetVars(ctx, "ups", "ups.status", "battery.charge", "battery.runtime", "input.voltage")
		if err != nil || len(v) != 4 {
			b.Fatalf("GetVars = %v, %v", v, err)
		}
	}
}

// BenchmarkGetVarsWithDeadline is the same with a context that has a
// deadline, as a monitor's poll would use.
func BenchmarkGetVarsWithDeadline(b *testing.B) {
	s := newServer(b)
	c := dial(b, s.Addr(), nut.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60e9)
	defer cancel()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.GetVars(ctx, "ups", "ups.status", "battery.charge", "battery.runtime", "input.voltage"); err != nil {
			b.Fatal(err)
		}
	}
}
