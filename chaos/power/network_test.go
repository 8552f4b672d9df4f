package power

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/nut/nuttest"
	"github.com/sundown-ups/sundown/internal/peer"
	"github.com/sundown-ups/sundown/internal/peer/nutd/proc"
)

// recorder remembers every command line a nuttest server receives, with
// its connection.
type recorder struct {
	mu    sync.Mutex
	lines []recorded
}

type recorded struct {
	conn int
	at   time.Time
	line string
}

func (r *recorder) hook(conn int, line string) (string, bool) {
	r.mu.Lock()
	r.lines = append(r.lines, recorded{conn, time.Now(), line})
	r.mu.Unlock()
	return "", false
}

func (r *recorder) since(t time.Time) []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []recorded
	for _, l := range r.lines {
		if !l.at.Before(t) {
			out = append(out, l)
		}
	}
	return out
}

// fakeUPSD starts a nuttest server with one UPS "ups" on line, recording
// commands, on ln (or 127.0.0.1:0 when ln is nil).
func fakeUPSD(t *testing.T, ln net.Listener) (*nuttest.Server, *recorder) {
	t.Helper()
	srv := nuttest.NewServer()
	srv.AddUPS("ups", "fake", onLine())
	srv.AddUser("mon", nutPassword, nuttest.Perms{Upsmon: "primary"})
	rec := &recorder{}
	srv.SetHook(rec.hook)
	var err error
	if ln != nil {
		err = srv.Listen(ln)
	} else {
		err = srv.Start("127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv, rec
}

// openFDs counts the open file descriptors of pid.
func openFDs(t *testing.T, pid int) int {
	t.Helper()
	es, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		t.Fatalf("count fds of %d: %v", pid, err)
	}
	return len(es)
}

// 7. A NUT server that answers one byte a second (nuttest's trickle, after
// a normal start): every poll times out (the client's 5 s read timeout),
// the connection is dropped and retried, the daemon stays alive and its
// API answers at once, and nothing shuts down while the UPS was last seen
// on line, even far past the deadtime. The connections are not leaked.
// When the server answers normally again, the daemon reads it again.
func slowLoris(t *testing.T, s *suite) {
	srv, rec := fakeUPSD(t, nil)
	d := s.start(t, daemonSpec{name: "slowloris", body: `power: {poll_interval: 500ms, deadtime: 5s}
ups:
  - name: rack
    nut: {address: "` + srv.Addr() + `", ups: ups}
`})
	d.waitStatus(t, "OL read", 10*time.Second, commOK("rack", "OL"))
	d.hold(t, "on line", time.Second)
	fds := openFDs(t, d.p.PID())

	slow := time.Now()
	srv.SetTrickle(time.Second)
	var worst time.Duration
	var answers int
	for time.Since(slow) < 17*time.Second {
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		_, took, err := d.fetchStatus(ctx)
		cancel()
		if err != nil {
			t.Fatalf("the API did not answer while the NUT server trickled (%.1fs in): %v", time.Since(slow).Seconds(), err)
		}
		answers++
		worst = max(worst, took)
		d.hold(t, "slow server", 500*time.Millisecond)
	}
	if worst > time.Second {
		t.Errorf("the API took up to %s to answer while the NUT server trickled", worst)
	}
	lost := d.find(t, func(l logLine) bool {
		return l.Msg == "connection to UPS lost; reconnecting" && l.str("ups") == "rack" && !l.Time.Before(slow)
	})
	if len(lost) < 2 {
		t.Fatalf("%d dropped connections in 17 s of a trickling server, want the reads to time out and retry (≥ 2)", len(lost))
	}
	if e := lost[0].str("err"); !strings.Contains(e, "timeout") && !strings.Contains(e, "timed out") {
		t.Errorf("connection dropped for %q, want a read timeout", e)
	}
	conns := map[int]bool{}
	for _, l := range rec.since(slow) {
		conns[l.conn] = true
	}
	if len(conns) < 3 {
		t.Errorf("the server saw commands on %d connections after the slowdown, want ≥ 3 (the first and its retries)", len(conns))
	}
	st := d.status(t)
	u := st.ups(t, "rack")
	if u.Comm == "ok" || !u.OnLine || u.LastSeen.After(slow.Add(poll+100*time.Millisecond)) {
		t.Errorf("UPS during the slowdown: comm %q, on line %v, last seen %s (slowdown at %s); want comm lost, last seen on line before it",
			u.Comm, u.OnLine, u.LastSeen.Format(time.StampMilli), slow.Format(time.StampMilli))
	}
	if silent := time.Since(u.LastSeen); silent < 10*time.Second {
		t.Errorf("only %.1fs without data: the scenario did not outlast the 5 s deadtime", silent.Seconds())
	}
	if n := openFDs(t, d.p.PID()); n > fds+3 {
		t.Errorf("the daemon has %d open fds after %d reconnects, %d before the slowdown: connections leak", n, len(lost), fds)
	}

	srv.SetTrickle(0)
	back := time.Now()
	d.waitStatus(t, "OL read again", 15*time.Second, commOK("rack", "OL"))
	t.Logf("trickling 1 byte/s for %.1fs: %d read timeouts (%q), %d connections, API answered %d times (worst %s), no shutdown (%s); read again %.1fs after the server recovered",
		back.Sub(slow).Seconds(), len(lost), lost[0].str("err"), len(conns), answers, worst.Round(time.Millisecond),
		st.Decision.Summary, time.Since(back).Seconds())
}

// netns is a network namespace made for one test: a holder process
// (sleep) keeps it alive; lo is up; iptables rules in it drop SYNs.
type netns struct {
	path     string // /proc/PID/ns/net of the holder
	pid      int
	nsenter  string
	iptables string
}

// newNetns creates the namespace or calls peer.Missing with the reason
// (no unshare/nsenter/ip/iptables, or no right to create namespaces).
func newNetns(t *testing.T) *netns {
	t.Helper()
	if setnsTrap == 0 {
		peer.Missing(t, "no setns system call number known for "+runtime.GOARCH)
	}
	unshare := peer.NeedBinary(t, "unshare", "apt-get install -y util-linux")
	nsenter := peer.NeedBinary(t, "nsenter", "apt-get install -y util-linux")
	ip := peer.NeedBinary(t, "ip", "apt-get install -y iproute2")
	iptables := peer.NeedBinary(t, "iptables", "apt-get install -y iptables")
	if out, err := exec.Command(unshare, "--net", "--", ip, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		peer.Missing(t, fmt.Sprintf("cannot create a network namespace (needs root or CAP_SYS_ADMIN): unshare --net: %v: %s", err, out))
	}
	p, err := proc.Start("netns holder", unshare, []string{"--net", "--", "sleep", "3600"}, os.Environ(),
		filepath.Join(t.TempDir(), "netns.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(2 * time.Second) })
	n := &netns{path: "/proc/" + strconv.Itoa(p.PID()) + "/ns/net", pid: p.PID(), nsenter: nsenter, iptables: iptables}
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		if l, err := os.Readlink(n.path); err == nil && l != self {
			break
		}
		if p.Exited() || time.Now().After(deadline) {
			t.Fatalf("the namespace holder did not enter a new network namespace (exited %v: %v)", p.Exited(), p.ExitErr())
		}
		time.Sleep(10 * time.Millisecond)
	}
	n.run(t, ip, "link", "set", "lo", "up")
	return n
}

// setnsTraps are the numbers of the setns system call, which package
// syscall does not name (golang.org/x/sys/unix does, but is not a direct
// requirement of the module).
var setnsTraps = map[string]uintptr{
	"amd64": 308, "arm64": 268, "riscv64": 268, "loong64": 268,
	"386": 346, "arm": 375, "ppc64": 350, "ppc64le": 350, "s390x": 339,
}

// setnsTrap is the setns number of this machine (0: unknown, newNetns
// reports the peer missing).
var setnsTrap = setnsTraps[runtime.GOARCH]

// run runs a command inside the namespace.
func (n *netns) run(t *testing.T, cmd ...string) {
	t.Helper()
	args := append([]string{"--net=" + n.path, "--"}, cmd...)
	if out, err := exec.Command(n.nsenter, args...).CombinedOutput(); err != nil {
		peer.Missing(t, fmt.Sprintf("nsenter %s: %v: %s", strings.Join(cmd, " "), err, out))
	}
}

// dropSYNs makes every packet to 127.0.0.1:port inside the namespace
// vanish (SYNs and data alike): connects and reads hang.
func (n *netns) dropSYNs(t *testing.T, port int) {
	t.Helper()
	n.run(t, n.iptables, "-A", "INPUT", "-p", "tcp", "-d", "127.0.0.1", "--dport", strconv.Itoa(port), "-j", "DROP")
}

// do runs fn on an OS thread that has entered the namespace (sockets it
// opens live there). The thread is never returned to the runtime's pool:
// the locked goroutine ends and the thread with it.
func (n *netns) do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // no Unlock: this thread is in another namespace now
		f, err := os.Open(n.path)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if _, _, e := syscall.RawSyscall(setnsTrap, f.Fd(), syscall.CLONE_NEWNET, 0); e != 0 {
			errc <- fmt.Errorf("setns %s: %w", n.path, e)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

func (n *netns) listen(t *testing.T) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := n.do(func() (err error) {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatalf("listen in the namespace: %v", err)
	}
	return ln
}

// httpClient reaches servers inside the namespace.
func (n *netns) httpClient() *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := n.do(func() (err error) {
				var d net.Dialer
				c, err = d.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}}
}

// 8. Peers that never answer, inside a network namespace whose iptables
// drops the packets: "void" is dropped from the start (never reached),
// "rack" (a NUT server in the namespace) is read on line and then dropped
// mid-connection. min_supplies 2, so either UPS wrongly judged critical
// would shut the site down. The daemon must keep running, say the UPSes
// are unreachable, keep its API answering and never shut down.
func blackhole(t *testing.T, s *suite) {
	ns := newNetns(t)
	const voidPort = 3493
	ns.dropSYNs(t, voidPort)
	srv, _ := fakeUPSD(t, ns.listen(t))
	_, rackPort, _ := net.SplitHostPort(srv.Addr())
	d := s.start(t, daemonSpec{name: "blackhole", body: `power: {poll_interval: 500ms, deadtime: 5s, min_supplies: 2}
ups:
  - name: void
    nut: {address: "127.0.0.1:` + strconv.Itoa(voidPort) + `", ups: ups, username: mon, password_env: ` + nutPassEnv + `}
  - name: rack
    nut: {address: "` + srv.Addr() + `", ups: ups, username: mon, password_env: ` + nutPassEnv + `}
`, wrap: []string{ns.nsenter, "--net=" + ns.path, "--"}, httpc: ns.httpClient()})
	if l, err := os.Readlink("/proc/" + strconv.Itoa(d.p.PID()) + "/ns/net"); err != nil || l != mustReadlink(t, ns.path) {
		t.Fatalf("the daemon runs in network namespace %q (%v), want the test's %q", l, err, mustReadlink(t, ns.path))
	}
	d.waitStatus(t, "rack OL read", 15*time.Second, commOK("rack", "OL"))
	never := d.waitLog(t, "void unreachable", 15*time.Second, func(l logLine) bool {
		return l.Msg == "cannot reach UPS; retrying" && l.str("ups") == "void"
	})
	if e := never.str("err"); !strings.Contains(e, "timeout") && !strings.Contains(e, "deadline") {
		t.Errorf("void unreachable for %q, want a connect timeout (the SYNs vanish)", e)
	}

	p, _ := strconv.Atoi(rackPort)
	dropped := time.Now()
	ns.dropSYNs(t, p)
	d.hold(t, "blackholed", 14*time.Second)
	lost := d.find(t, func(l logLine) bool {
		return (l.Msg == "connection to UPS lost; reconnecting" || l.Msg == "cannot reach UPS; retrying") &&
			l.str("ups") == "rack" && !l.Time.Before(dropped)
	})
	if len(lost) == 0 {
		t.Fatal("the daemon did not report rack unreachable after its packets were dropped")
	}
	st := d.status(t)
	void, rack := st.ups(t, "void"), st.ups(t, "rack")
	if void.Reached || void.Comm == "ok" {
		t.Errorf("void: reached %v, comm %q; want never reached", void.Reached, void.Comm)
	}
	if rack.Comm == "ok" || !rack.OnLine || time.Since(rack.LastSeen) < 10*time.Second {
		t.Errorf("rack: comm %q, on line %v, last seen %.1fs ago; want comm lost, last seen on line, silent past the 5 s deadtime",
			rack.Comm, rack.OnLine, time.Since(rack.LastSeen).Seconds())
	}
	if st.Decision.Kind == "shutdown" {
		t.Errorf("decision %q", st.Decision.Summary)
	}
	t.Logf("void never reached (%q); rack dropped mid-connection: %q after %.1fs; no shutdown after %.1fs silent (deadtime 5 s, min_supplies 2): %s",
		never.str("err"), lost[0].str("err"), lost[0].Time.Sub(dropped).Seconds(), time.Since(rack.LastSeen).Seconds(), st.Decision.Summary)
}

func mustReadlink(t *testing.T, p string) string {
	t.Helper()
	l, err := os.Readlink(p)
	if err != nil {
		t.Fatal(err)
	}
	return l
}
