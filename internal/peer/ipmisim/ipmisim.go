// Package ipmisim starts OpenIPMI's ipmi_sim for tests: a real BMC on
// 127.0.0.1 whose chassis is a shell script, so a test sees exactly which
// chassis commands reached the "hardware" and can read the power state.
package ipmisim

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/peer"
)

// Binary is the simulator the harness runs.
const Binary = "/usr/bin/ipmi_sim"

// Users every simulated BMC has. The viewer may log in but not control power.
const (
	Admin, AdminPass       = "admin", "adm1n-s3cret"
	Operator, OperatorPass = "oper", "op-s3cret"
	Viewer, ViewerPass     = "viewer", "v1ew-s3cret"
)

// Sim is a real OpenIPMI ipmi_sim started by a test on 127.0.0.1. Its
// chassis is a shell script: "get power" answers from a state file, and
// every "set" is appended to a record file, so a test sees exactly which
// chassis commands reached the "hardware".
type Sim struct {
	Host   string
	Port   int
	dir    string
	cmd    *exec.Cmd
	exited chan struct{}
	logMu  sync.Mutex
	log    bytes.Buffer
}

// chassisScript implements ipmi_sim's chassis_control protocol:
//
//	script <mc> get power        -> prints "power:1" or "power:0"
//	script <mc> set power 1 ...  -> records the line, updates the state
//
// Only power changes the state; shutdown (soft off), reset, boot and
// identify are recorded and otherwise ignored, like a host whose OS has
// not yet reacted.
const chassisScript = `#!/bin/sh
dir=%q
mc=$1; op=$2; shift 2
case "$op" in
get)
	for p in "$@"; do
		case "$p" in
		power) echo "power:$(cat "$dir/power")" ;;
		boot) echo "boot:default" ;;
		*) echo "unsupported get $p" ; exit 1 ;;
		esac
	done ;;
set)
	echo "set $*" >> "$dir/record"
	while [ $# -ge 2 ]; do
		if [ "$1" = power ]; then echo "$2" > "$dir/power.tmp" && mv "$dir/power.tmp" "$dir/power"; fi
		shift 2
	done ;;
*) echo "unsupported op $op"; exit 1 ;;
esac
`

const lanConf = `name "sundown-wake-test"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 %d
    priv_limit admin
    allowed_auths_callback md5
    allowed_auths_user md5
    allowed_auths_operator md5
    allowed_auths_admin md5
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "%s 0x20"
  user 2 true "%s" "%s" admin 10 md5
  user 3 true "%s" "%s" operator 10 md5
  user 4 true "%s" "%s" user 10 md5
`

const simEmu = `mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 0x09 0x08 0x9f 0x1291 0xf02 persist_sdr
mc_enable 0x20
`

// Start starts ipmi_sim with the chassis powered as given, waits until it
// listens, and stops it by PID when the test ends. It skips (fails with
// SUNDOWN_REQUIRE_PEERS=1) when ipmi_sim is not installed.
func Start(t testing.TB, powerOn bool) *Sim {
	t.Helper()
	bin := peer.NeedBinary(t, Binary, "apt-get install -y openipmi")
	dir := t.TempDir()
	s := &Sim{Host: "127.0.0.1", dir: dir, exited: make(chan struct{})}

	state := "0"
	if powerOn {
		state = "1"
	}
	script := filepath.Join(dir, "chassis.sh")
	mustWrite(t, script, fmt.Sprintf(chassisScript, dir), 0o755)
	mustWrite(t, filepath.Join(dir, "power"), state+"\n", 0o644)
	mustWrite(t, filepath.Join(dir, "record"), "", 0o644)

	s.Port = FreeUDPPort(t)
	conf := filepath.Join(dir, "lan.conf")
	mustWrite(t, conf, fmt.Sprintf(lanConf, s.Port, script,
		Admin, AdminPass, Operator, OperatorPass, Viewer, ViewerPass), 0o600)
	emu := filepath.Join(dir, "sim.emu")
	mustWrite(t, emu, simEmu, 0o644)
	stateDir := filepath.Join(dir, "state")
	if err := os.Mkdir(stateDir, 0o700); err != nil {
		t.Fatal(err)
	}

	s.cmd = exec.Command(bin, "-c", conf, "-f", emu, "-s", stateDir, "-n")
	s.cmd.Stdout = s
	s.cmd.Stderr = s
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start ipmi_sim: %v", err)
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(s.stop)

	deadline := time.Now().Add(10 * time.Second)
	for !udpListening(t, s.Port) {
		select {
		case <-s.exited:
			t.Fatalf("ipmi_sim exited during start: %s", s.output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("ipmi_sim not listening on %s:%d after 10s: %s", s.Host, s.Port, s.output())
		}
		time.Sleep(10 * time.Millisecond) // polling a real peer with a deadline
	}
	return s
}

func (s *Sim) Write(p []byte) (int, error) {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return s.log.Write(p)
}

func (s *Sim) output() string {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return s.log.String()
}

// stop ends the simulator by its PID: SIGTERM, then SIGKILL after 5s.
func (s *Sim) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// Record returns the chassis "set" lines the script received, in order.
func (s *Sim) Record(t testing.TB) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.dir, "record"))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}

// Power returns the chassis state file's content ("0" or "1").
func (s *Sim) Power(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.dir, "power"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func mustWrite(t testing.TB, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

// FreeUDPPort returns a loopback UDP port nothing listens on right now.
func FreeUDPPort(t testing.TB) int {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := c.LocalAddr().(*net.UDPAddr).Port
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	return port
}

// udpListening reports whether a UDP socket is bound to 127.0.0.1:port,
// from /proc/net/udp (so readiness needs no IPMI traffic).
func udpListening(t testing.TB, port int) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		t.Fatalf("read /proc/net/udp: %v", err)
	}
	want := fmt.Sprintf("0100007F:%04X", port)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		if f := strings.Fields(line); len(f) > 1 && f[1] == want {
			return true
		}
	}
	return false
}

// SetPower sets the chassis state as the hardware would (a host that shut
// itself down is off), without an IPMI command.
func (s *Sim) SetPower(t testing.TB, on bool) {
	t.Helper()
	v := "0"
	if on {
		v = "1"
	}
	mustWrite(t, filepath.Join(s.dir, "power"), v+"\n", 0o644)
}

// WaitPowerOn returns once a chassis command has powered the chassis on,
// or ctx's error. It polls the state file (no IPMI traffic) and may run
// on any goroutine.
func (s *Sim) WaitPowerOn(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if b, err := os.ReadFile(filepath.Join(s.dir, "power")); err == nil && strings.TrimSpace(string(b)) == "1" {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
