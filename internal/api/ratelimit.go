package api

import (
	"sync"
	"time"
)

// maxBuckets bounds the limiter's memory: past it, buckets that have
// refilled are forgotten (they hold no information).
const maxBuckets = 1024

// limiter is a token bucket per client: rate tokens per minute, at most
// burst at once. Time comes from the caller, so tests drive it.
type limiter struct {
	mu      sync.Mutex
	perSec  float64
	burst   float64
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(perMin float64, burst int) *limiter {
	return &limiter{perSec: perMin / 60, burst: float64(burst), buckets: map[string]*bucket{}}
}

// allow takes a token for key at now; when none is left it reports how
// long until one is.
func (l *limiter) allow(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= maxBuckets {
			l.pruneLocked(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	l.refillLocked(b, now)
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / l.perSec * float64(time.Second))
}

func (l *limiter) refillLocked(b *bucket, now time.Time) {
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(l.burst, b.tokens+el.Seconds()*l.perSec)
		b.last = now
	}
}

func (l *limiter) pruneLocked(now time.Time) {
	for k, b := range l.buckets {
		l.refillLocked(b, now)
		if b.tokens >= l.burst {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) >= maxBuckets {
		// Every client is busy: forget the one idle the longest.
		var oldest string
		var at time.Time
		for k, b := range l.buckets {
			if oldest == "" || b.last.Before(at) {
				oldest, at = k, b.last
			}
		}
		delete(l.buckets, oldest)
	}
}
