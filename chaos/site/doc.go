// Package site is sundown's whole-system fault-injection suite ("chaos
// before customers"): it breaks the targets and the process around a real
// shutdown and checks that the site still goes down in order, and that
// sundown says what it could not do.
//
// The package has no code of its own; everything is in its tests. Each
// scenario builds the `sundown` binary once (go build ./cmd/sundown, with
// -race when the tests run with it), starts it as a child process with a
// config written into the test's temp dir, and breaks one thing:
//
//   - targets: a guest that ignores its shutdown, a hypervisor task that
//     hangs, a vSphere session that expires while sundown idles, a missing
//     privilege, an SSH host key that changed, a target unreachable for the
//     whole event;
//   - the process: SIGKILL at random (seeded) points of a shutdown, ten
//     times in a row; the journal's file system full; notification
//     receivers down or hanging;
//   - and, across all of them, no secret in any output.
//
// The peers are real where one runs here: govmomi's vSphere simulator
// (in this test process, serving HTTPS on 127.0.0.1, see
// internal/provider/vsphere/vcsim), upsd with the dummy-ups driver
// (internal/peer/nutd), OpenSSH's sshd (internal/peer/sshd). Tests that miss
// a peer skip locally and fail in CI (SUNDOWN_REQUIRE_PEERS=1, see
// internal/peer). The disk-full scenario mounts a small tmpfs and so needs
// root.
//
// Random kill points are drawn from a seed that the test logs; set
// SUNDOWN_CHAOS_SEED to replay a run.
package site
