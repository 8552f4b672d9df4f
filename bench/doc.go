// Package bench measures sundown against the real NUT 2.8.0 peers that run on
// this machine and writes the results to docs/BENCHMARKS.md:
//
//   - BenchmarkDetectionLatency: how long after upsd first serves a new
//     ups.status sundown's daemon core emits ONBATT/ONLINE, next to the real
//     upsmon (both at their default poll settings).
//   - BenchmarkIdleCost8UPS: CPU and memory of the sundown binary watching 8
//     UPSes, next to upsmon watching the same 8.
//   - TestDecisionParity: the same power scenarios fed to upsmon and to
//     sundown against one real upsd, comparing who decides to shut down and
//     when. It is a test and runs in CI.
//
// The benchmarks are scenarios, not microbenchmarks: each runs its scenario
// once whatever b.N is (run them with -benchtime 1x) and reports its
// numbers with b.ReportMetric. `make bench` runs everything and rewrites the
// sections of docs/BENCHMARKS.md in place (between <!-- bench:NAME --> and
// <!-- /bench:NAME --> markers).
//
// The non-test files hold the pure parts (statistics, /proc parsing, the
// in-place rewriting of the results file), unit-tested without peers.
package bench
