package main

// Per-stream counters and latency samples, and the summary they make.

import (
	"math"
	"sort"
	"sync"
	"time"
)

type stream struct {
	name       string
	targetRate float64

	mu        sync.Mutex
	sent      int64
	invalid   int64
	ok        int64
	okInHold  int64
	goodHold  int64 // ok in the hold and answered within the good bound
	goodMs    float64
	shed      int64     // answered 503 (admission control), counted apart from errors
	shedBare  int64     // of which without a Retry-After header
	shedMs    []float64 // their latencies
	errors    map[string]int64
	misses    map[string]int64
	latencies []float64 // ms, from the scheduled send time, of every answered or timed-out request
	lastDone  time.Time
}

func newStream(name string, targetRate, goodMs float64) *stream {
	return &stream{name: name, targetRate: targetRate, goodMs: goodMs, errors: map[string]int64{}, misses: map[string]int64{}}
}

// recordShed: a 503 (shed by admission control; the client is told to retry later). Not
// an error: a server past capacity that says so at once is what the overload steps want.
func (s *stream) recordShed(scheduled, done time.Time, retryAfter bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shed++
	if !retryAfter {
		s.shedBare++
	}
	s.shedMs = append(s.shedMs, float64(done.Sub(scheduled))/float64(time.Millisecond))
}

// window: the hold phase, for the hold throughput.
type window struct{ start, holdFrom, holdTo time.Time }

func (s *stream) counted(invalid bool) {
	s.mu.Lock()
	s.sent++
	if invalid {
		s.invalid++
	}
	s.mu.Unlock()
}

// record one outcome: ok, else an error (or, with miss, a Location miss) of `kind`. A
// zero `done` means the request was never sent (skipped): no latency sample.
func (s *stream) record(w window, scheduled, done time.Time, ok bool, kind string, miss bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !done.IsZero() {
		s.latencies = append(s.latencies, float64(done.Sub(scheduled))/float64(time.Millisecond))
		if done.After(s.lastDone) {
			s.lastDone = done
		}
	}
	switch {
	case ok:
		s.ok++
		if !done.Before(w.holdFrom) && !done.After(w.holdTo) {
			s.okInHold++
			if float64(done.Sub(scheduled))/float64(time.Millisecond) <= s.goodMs {
				s.goodHold++
			}
		}
	case miss:
		s.misses[kind]++
	default:
		s.errors[kind]++
	}
}

type streamSummary struct {
	TargetRate        float64          `json:"target_rate"`
	Sent              int64            `json:"sent"`
	InvalidSent       int64            `json:"invalid_sent"`
	OK                int64            `json:"ok"`
	Errors            int64            `json:"errors"`
	ErrorsByKind      map[string]int64 `json:"errors_by_kind"`
	LocationMisses    int64            `json:"location_misses"`
	MissesByKind      map[string]int64 `json:"misses_by_kind"`
	ThroughputHold    float64          `json:"throughput_hold"`
	GoodputHold       float64          `json:"goodput_hold"` // ok within -good-ms, per second of the hold
	Shed              int64            `json:"shed"`
	ShedWithoutRetry  int64            `json:"shed_without_retry_after"`
	ShedP99           float64          `json:"shed_p99_ms"`
	ShedMax           float64          `json:"shed_max_ms"`
	ThroughputOverall float64          `json:"throughput_overall"`
	P50               float64          `json:"p50_ms"`
	P90               float64          `json:"p90_ms"`
	P99               float64          `json:"p99_ms"`
	Max               float64          `json:"max_ms"`
	Mean              float64          `json:"mean_ms"`
	Samples           int              `json:"samples"`
}

func (s *stream) summary(w window, hold time.Duration) streamSummary {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := streamSummary{
		TargetRate: s.targetRate, Sent: s.sent, InvalidSent: s.invalid, OK: s.ok,
		ErrorsByKind: copyCounts(s.errors), MissesByKind: copyCounts(s.misses), Samples: len(s.latencies),
	}
	for _, n := range s.errors {
		out.Errors += n
	}
	for _, n := range s.misses {
		out.LocationMisses += n
	}
	if hold > 0 {
		out.ThroughputHold = round(float64(s.okInHold)/hold.Seconds(), 2)
		out.GoodputHold = round(float64(s.goodHold)/hold.Seconds(), 2)
	}
	out.Shed, out.ShedWithoutRetry = s.shed, s.shedBare
	if n := len(s.shedMs); n > 0 {
		sorted := append([]float64(nil), s.shedMs...)
		sort.Float64s(sorted)
		out.ShedP99 = round(percentile(sorted, 0.99), 3)
		out.ShedMax = round(sorted[n-1], 3)
	}
	if elapsed := s.lastDone.Sub(w.start).Seconds(); elapsed > 0 {
		out.ThroughputOverall = round(float64(s.ok)/elapsed, 2)
	}
	if n := len(s.latencies); n > 0 {
		sorted := append([]float64(nil), s.latencies...)
		sort.Float64s(sorted)
		sum := 0.0
		for _, v := range sorted {
			sum += v
		}
		out.P50 = round(percentile(sorted, 0.50), 3)
		out.P90 = round(percentile(sorted, 0.90), 3)
		out.P99 = round(percentile(sorted, 0.99), 3)
		out.Max = round(sorted[n-1], 3)
		out.Mean = round(sum/float64(n), 3)
	}
	return out
}

// percentile: nearest rank over the sorted samples (exact, no histogram).
func percentile(sorted []float64, q float64) float64 {
	rank := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(rank, len(sorted)-1))]
}

func round(x float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(x*p) / p
}

func copyCounts(m map[string]int64) map[string]int64 {
	out := make(map[string]int64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
