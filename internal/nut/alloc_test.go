package nut

import (
	"bufio"
	"context"
	"testing"
)

// echoConn answers every write with the same canned reply.
type echoConn struct {
	memConn
	reply []byte
}

func (e *echoConn) Write(p []byte) (int, error) {
	e.pending = e.reply // Read only reslices it
	return len(p), nil
}

func newEchoClient(reply string) *Client {
	ec := &echoConn{reply: []byte(reply)}
	c := &Client{nc: ec, raw: ec, opts: Options{}.withDefaults()}
	c.br = bufio.NewReaderSize(ec, c.bufSize())
	return c
}

const fourVars = "VAR ups ups.status \"OL CHRG\"\nVAR ups battery.charge \"100\"\nVAR ups battery.runtime \"1800\"\nVAR ups input.voltage \"230.0\"\n"

// BenchmarkGetVarsClient measures the client alone (no network, no
// server): what one poll of four variables costs the monitor.
func BenchmarkGetVarsClient(b *testing.B) {
	c := newEchoClient(fourVars)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		v, err := c.GetVars(ctx, "ups", "ups.status", "battery.charge", "battery.runtime", "input.voltage")
		if err != nil || len(v) != 4 {
			b.Fatal(v, err)
		}
	}
}

// TestGetVarsAllocations pins the allocation budget of the hot path: the
// map, its four values, and nothing per line beyond that.
func TestGetVarsAllocations(t *testing.T) {
	c := newEchoClient(fourVars)
	ctx := context.Background()
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := c.GetVars(ctx, "ups", "ups.status", "battery.charge", "battery.runtime", "input.voltage"); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 6 {
		t.Errorf("GetVars of 4 variables: %.0f allocations, want at most 6", allocs)
	}
	t.Logf("GetVars of 4 variables: %.0f allocations", allocs)
}
