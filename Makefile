# sundown — developer tasks. CI runs .ci/run; these are for people.

.PHONY: bench bench-shutdown

# bench measures sundown against the real NUT peers (needs nut-server and
# nut-client installed; about 5 minutes) and runs the ordered-shutdown
# benchmarks (about 1 more minute), and rewrites docs/BENCHMARKS.md.
bench:
	SUNDOWN_WRITE_DOCS=1 go test ./bench -run 'TestDecisionParity' -count=1 && SUNDOWN_WRITE_DOCS=1 go test ./bench -run '^$$' -bench . -benchtime 1x -count=1

# bench-shutdown runs only the ordered-shutdown benchmarks (1,000 VMs on the
# vCenter simulator in real time, 10,000 on the fake provider in virtual
# time; about 1 minute, no peer to install) and rewrites their sections of
# docs/BENCHMARKS.md.
bench-shutdown:
	SUNDOWN_WRITE_DOCS=1 go test ./bench -run '^$$' -bench 'Shutdown' -benchtime 1x -count=1
