package nut

import (
	"math"
	"math/rand/v2"
	"time"
)

// Backoff computes the waits between reconnection attempts: Min, then
// doubling (Factor) up to Max, each wait shortened by a random part of up
// to Jitter of itself so that many clients do not reconnect in step. Reset
// after a successful connection. A Backoff is not safe for concurrent use;
// the zero value is usable.
type Backoff struct {
	Min time.Duration // first wait; 0 means 500ms
	Max time.Duration // cap; 0 means 30s (never below Min)
	// Factor multiplies the wait after each attempt; values below 1 mean 2.
	Factor float64
	// Jitter is the largest fraction of a wait taken off at random, in
	// (0, 1]; 0 means 0.2. For no jitter, set Rand to return 0.
	Jitter float64
	// Rand returns a number in [0, 1); nil means math/rand/v2.Float64.
	// Tests inject a fixed source.
	Rand func() float64

	attempt int
}

// Next returns the wait before the next attempt and advances the sequence.
func (b *Backoff) Next() time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = 500 * time.Millisecond
	}
	if hi <= 0 {
		hi = 30 * time.Second
	}
	hi = max(hi, lo)
	factor := b.Factor
	if factor < 1 {
		factor = 2
	}
	jitter := b.Jitter
	if jitter <= 0 {
		jitter = 0.2
	}
	jitter = min(jitter, 1)
	rnd := b.Rand
	if rnd == nil {
		rnd = rand.Float64
	}

	d := float64(lo) * math.Pow(factor, float64(b.attempt))
	if d >= float64(hi) || math.IsInf(d, 0) || math.IsNaN(d) {
		d = float64(hi)
	} else {
		b.attempt++
	}
	r := rnd()
	if r < 0 || r >= 1 || math.IsNaN(r) {
		r = 0
	}
	d -= d * jitter * r
	return time.Duration(d)
}

// Reset starts the sequence again from Min.
func (b *Backoff) Reset() { b.attempt = 0 }
