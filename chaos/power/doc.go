// Package power is the power-signal half of sundown's whole-system
// fault-injection suite ("chaos before customers").
//
// It holds tests only. Each scenario builds the real sundown binary (once
// per test binary), runs it as a separate process (`sundown run -c
// CONFIG`) against real peers — upsd with dummy-ups drivers, the in-process
// NUT server of internal/nut/nuttest where upsd cannot misbehave on
// demand, a network namespace whose firewall drops SYNs — then breaks
// those peers on purpose and asserts what the daemon did, from the
// outside: its JSON log lines on stderr ("decision", "power event", "cannot
// reach UPS; retrying", …), its HTTP API (/api/v1/status) and what upsd
// shows (FSD, NUMLOGINS).
//
// The configs have no targets: the daemon's whole shutdown is then its
// decision, and FSD on upsd when it is the UPS's primary. Every captured
// output of every scenario is scanned for the secrets the scenarios
// configure (NUT password, API token); a hit fails the suite.
//
// The scenarios need nut-server, nut-client, libnss3-tools, openssl,
// iproute2, util-linux (unshare, nsenter) and iptables, and root for the
// network namespace. A missing peer skips locally and fails in CI
// (SUNDOWN_REQUIRE_PEERS=1). Scenarios run in parallel (the test binary
// raises -test.parallel unless it is given): most of their time is spent
// waiting for deadtimes, and the package takes about 30 s once the binary
// is built. Scenarios that find a bug fail with a message starting "BUG:".
package power
