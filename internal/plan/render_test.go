package plan

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"
)

var demoOpts = TextOptions{Runtime: 1260 * s, Margin: 120 * s}

func TestDemoGolden(t *testing.T) {
	p, probs := Build(demoSpec())
	if len(probs) != 0 {
		t.Fatalf("problems:\n%s", problemsText(probs))
	}
	sc := p.Estimate(p.Caps)
	checkSchedule(t, p, sc)
	golden(t, "demo.txt", []byte(render(t, p, sc, demoOpts)))

	var buf bytes.Buffer
	if err := p.JSON(&buf, sc, demoOpts); err != nil {
		t.Fatal(err)
	}
	golden(t, "demo.json", buf.Bytes())
	var v View
	if err := json.Unmarshal(buf.Bytes(), &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Steps) != len(p.Steps) || v.Makespan != sc.Makespan.Seconds() || !v.Battery.Fits {
		t.Errorf("view: %d steps, makespan %v, battery %+v", len(v.Steps), v.Makespan, v.Battery)
	}
}

func TestDemoTightCapsGolden(t *testing.T) {
	// The same site with one slot per host and two overall, no runtime
	// known: the margin line says how much battery the plan needs.
	p, _ := Build(demoSpec())
	sc := p.Estimate(Caps{Global: 2, PerHost: 1})
	checkSchedule(t, p, sc)
	golden(t, "demo-tight.txt", []byte(render(t, p, sc, TextOptions{Margin: 120 * s})))
}

func TestDeterminism(t *testing.T) {
	base := demoSpec()
	p, _ := Build(base)
	sc := p.Estimate(p.Caps)
	wantText := render(t, p, sc, demoOpts)
	var want bytes.Buffer
	if err := p.JSON(&want, sc, demoOpts); err != nil {
		t.Fatal(err)
	}
	for seed := range 20 {
		r := rand.New(rand.NewPCG(uint64(seed), 7))
		q, probs := Build(shuffleSpec(r, base))
		if len(probs) != 0 {
			t.Fatalf("seed %d: problems:\n%s", seed, problemsText(probs))
		}
		qs := q.Estimate(q.Caps)
		if got := render(t, q, qs, demoOpts); got != wantText {
			t.Fatalf("seed %d: text differs:\n%s", seed, got)
		}
		var got bytes.Buffer
		if err := q.JSON(&got, qs, demoOpts); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Fatalf("seed %d: JSON differs", seed)
		}
	}
}

func TestSecondsFormat(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0", 120 * s: "120", 1500 * time.Millisecond: "1.5", 12960 * time.Millisecond: "13.0",
		50 * time.Millisecond: "0.1", -1500 * time.Millisecond: "-1.5", 396875 * time.Millisecond: "396.9",
	} {
		if got := seconds(d); got != want {
			t.Errorf("seconds(%v) = %q, want %q", d, got, want)
		}
	}
}
