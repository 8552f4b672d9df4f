package wake

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

var testMAC = net.HardwareAddr{0x00, 0x1b, 0x21, 0x3c, 0x4d, 0x5e}

func wantPacket(mac net.HardwareAddr, pw []byte) []byte {
	var b bytes.Buffer
	b.Write(bytes.Repeat([]byte{0xff}, 6))
	for range 16 {
		b.Write(mac)
	}
	b.Write(pw)
	return b.Bytes()
}

func TestMagicPacket(t *testing.T) {
	p, err := MagicPacket(testMAC, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(p) != 102 || !bytes.Equal(p, wantPacket(testMAC, nil)) {
		t.Fatalf("packet = % x", p)
	}
	// Spot-check the layout by offset, independent of wantPacket.
	if !bytes.Equal(p[:6], []byte{255, 255, 255, 255, 255, 255}) || !bytes.Equal(p[6:12], testMAC) || !bytes.Equal(p[96:102], testMAC) {
		t.Fatalf("layout: % x", p)
	}
	pw := []byte{1, 2, 3, 4, 5, 6}
	p, err = MagicPacket(testMAC, pw)
	if err != nil {
		t.Fatal(err)
	}
	if len(p) != 108 || !bytes.Equal(p[102:], pw) {
		t.Fatalf("SecureOn packet = % x", p)
	}
	if _, err := MagicPacket(testMAC[:5], nil); err == nil {
		t.Fatal("5-byte MAC accepted")
	}
	if _, err := MagicPacket(testMAC, pw[:4]); err == nil {
		t.Fatal("4-byte SecureOn password accepted")
	}
}

func TestParseMAC(t *testing.T) {
	for _, s := range []string{"00:1b:21:3c:4d:5e", "00-1B-21-3C-4D-5E", "001b.213c.4d5e", "001B213c4D5e"} {
		got, err := ParseMAC(s)
		if err != nil || !bytes.Equal(got, testMAC) {
			t.Errorf("ParseMAC(%q) = %v, %v; want %v", s, got, err, testMAC)
		}
	}
	for _, s := range []string{
		"", "00:1b:21:3c:4d", "00:1b:21:3c:4d:5e:6f", "00:1b-21:3c:4d:5e", "00:1b:21:3c:4d:5g",
		"001b:213c:4d5e", "00.1b.21.3c.4d.5e", " 00:1b:21:3c:4d:5e", "00:1b:21:3c:4d:5e ",
		"0:1b:21:3c:4d:5e0", "00:00:5e:00:53:01:00:02", "001b213c4d5", "+01b213c4d5e", "0x1b213c4d5e",
	} {
		if got, err := ParseMAC(s); err == nil {
			t.Errorf("ParseMAC(%q) = %v, want an error", s, got)
		}
	}
	_, err := ParseMAC(strings.Repeat("z", 500))
	if err == nil || len(err.Error()) > 200 {
		t.Fatalf("long garbage: error %q", err)
	}
}

// FuzzParseMAC checks ParseMAC against net.ParseMAC as an oracle: both agree
// on every 48-bit address net.ParseMAC accepts, ParseMAC accepts nothing
// else except 12 bare hex digits, and what it returns formats and parses
// back to itself. It must never panic.
func FuzzParseMAC(f *testing.F) {
	for _, s := range []string{"00:1b:21:3c:4d:5e", "00-1B-21-3C-4D-5E", "001b.213c.4d5e", "001b213c4d5e",
		"00:00:5e:00:53:01:00:02", "", "::::::", "zz:zz:zz:zz:zz:zz", "0000.0000.0000.0000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseMAC(s)
		ref, refErr := net.ParseMAC(s)
		refOK := refErr == nil && len(ref) == 6
		if refOK {
			if err != nil || !bytes.Equal(got, ref) {
				t.Fatalf("ParseMAC(%q) = %v, %v; net.ParseMAC = %v", s, got, err, ref)
			}
		}
		if err != nil {
			if got != nil {
				t.Fatalf("ParseMAC(%q) returned %v with error %v", s, got, err)
			}
			return
		}
		if len(got) != 6 {
			t.Fatalf("ParseMAC(%q) = %d bytes", s, len(got))
		}
		if !refOK && !isBareHex12(s) {
			t.Fatalf("ParseMAC(%q) = %v; net.ParseMAC refuses it and it is not 12 hex digits", s, got)
		}
		back, err := ParseMAC(got.String())
		if err != nil || !bytes.Equal(back, got) {
			t.Fatalf("round trip of %v: %v, %v", got, back, err)
		}
	})
}

func isBareHex12(s string) bool {
	if len(s) != 12 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if _, ok := hexVal(s[i]); !ok {
			return false
		}
	}
	return true
}

func TestNewWOLValidation(t *testing.T) {
	w, err := NewWOL(WOLConfig{MAC: "00:1b:21:3c:4d:5e"})
	if err != nil {
		t.Fatal(err)
	}
	if w.String() != "wol 00:1b:21:3c:4d:5e via 255.255.255.255:9" || w.repeat != 3 || w.interval != time.Second {
		t.Fatalf("defaults: %s repeat=%d interval=%s", w, w.repeat, w.interval)
	}
	const pw = "not-a-mac-password"
	for _, tc := range []struct {
		cfg  WOLConfig
		want string
	}{
		{WOLConfig{MAC: "nope"}, `wol mac: invalid MAC address "nope"`},
		{WOLConfig{MAC: "ff:ff:ff:ff:ff:ff"}, "group (multicast/broadcast) address"},
		{WOLConfig{MAC: "01:00:5e:00:00:01"}, "group (multicast/broadcast) address"},
		{WOLConfig{MAC: "00:00:00:00:00:00"}, "all-zero"},
		{WOLConfig{MAC: "00:1b:21:3c:4d:5e", SecureOn: secret(pw)}, "wol secureon: invalid password"},
		{WOLConfig{MAC: "00:1b:21:3c:4d:5e", Broadcast: "lan"}, `wol broadcast "lan": not an IP address`},
		{WOLConfig{MAC: "00:1b:21:3c:4d:5e", Broadcast: "224.0.0.1"}, "want a broadcast or unicast address"},
		{WOLConfig{MAC: "00:1b:21:3c:4d:5e", Broadcast: "0.0.0.0"}, "want a broadcast or unicast address"},
		{WOLConfig{MAC: "00:1b:21:3c:4d:5e", Port: 65536}, "wol port 65536"},
		{WOLConfig{MAC: "00:1b:21:3c:4d:5e", Repeat: -1}, "wol repeat -1"},
		{WOLConfig{MAC: "00:1b:21:3c:4d:5e", Interval: -time.Second}, "wol interval -1s"},
	} {
		_, err := NewWOL(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewWOL(%+v) error = %v, want it to contain %q", tc.cfg, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), pw) {
			t.Errorf("error shows the SecureOn password: %v", err)
		}
	}
}

func TestIsBroadcast(t *testing.T) {
	_, lan, _ := net.ParseCIDR("192.168.10.7/24")
	lan.IP = net.ParseIP("192.168.10.7")
	_, p2p, _ := net.ParseCIDR("10.9.9.0/31")
	_, host, _ := net.ParseCIDR("10.8.8.8/32")
	v4in16 := &net.IPNet{IP: net.ParseIP("172.16.5.1"), Mask: net.CIDRMask(96+20, 128)}
	addrs := []net.Addr{lan, p2p, host, v4in16, &net.IPNet{IP: net.ParseIP("fe80::1"), Mask: net.CIDRMask(64, 128)}}
	for _, tc := range []struct {
		ip   string
		want bool
	}{
		{"255.255.255.255", true},
		{"192.168.10.255", true},
		{"172.16.15.255", true},
		{"192.168.10.7", false},
		{"192.168.11.255", false}, // a remote subnet: the router's business
		{"10.9.9.1", false},       // /31 has no broadcast
		{"10.8.8.8", false},
		{"127.0.0.1", false},
		{"::1", false},
		{"ff02::1", false},
	} {
		if got := IsBroadcast(net.ParseIP(tc.ip), addrs); got != tc.want {
			t.Errorf("IsBroadcast(%s) = %v, want %v", tc.ip, got, tc.want)
		}
	}
}

// listenUDP opens a loopback UDP listener standing in for the sleeping NIC.
func listenUDP(t *testing.T, network, addr string) (*net.UDPConn, int) {
	t.Helper()
	c, err := net.ListenPacket(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.UDPConn), c.LocalAddr().(*net.UDPAddr).Port
}

// readPackets reads until n packets arrived, failing after 5s.
func readPackets(t *testing.T, c *net.UDPConn, n int) [][]byte {
	t.Helper()
	var got [][]byte
	buf := make([]byte, 2048)
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	for len(got) < n {
		k, _, err := c.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("after %d of %d packets: %v", len(got), n, err)
		}
		got = append(got, append([]byte(nil), buf[:k]...))
	}
	return got
}

// assertNoMorePackets checks that nothing else is queued. Wake has
// returned, so every packet it sent is already in the socket buffer.
func assertNoMorePackets(t *testing.T, c *net.UDPConn) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	if k, _, err := c.ReadFromUDP(buf); err == nil {
		t.Fatalf("unexpected extra packet: % x", buf[:k])
	}
}

func TestWOLWakeLoopback(t *testing.T) {
	for _, tc := range []struct {
		name, network, listen, bcast string
		secureOn                     string
		pw                           []byte
	}{
		{"ipv4", "udp4", "127.0.0.1:0", "127.0.0.1", "", nil},
		{"ipv4 secureon", "udp4", "127.0.0.1:0", "127.0.0.1", "c0-ff-ee-12-34-56", []byte{0xc0, 0xff, 0xee, 0x12, 0x34, 0x56}},
		{"ipv6", "udp6", "[::1]:0", "::1", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, port := listenUDP(t, tc.network, tc.listen)
			w, err := NewWOL(WOLConfig{MAC: "00:1B:21:3C:4D:5E", SecureOn: secret(tc.secureOn),
				Broadcast: tc.bcast, Port: port, Repeat: 4, Interval: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			if err := w.Wake(ctxT(t)); err != nil {
				t.Fatalf("Wake: %v", err)
			}
			want := wantPacket(testMAC, tc.pw)
			for i, p := range readPackets(t, l, 4) {
				if !bytes.Equal(p, want) {
					t.Fatalf("packet %d = % x\nwant % x", i, p, want)
				}
			}
			assertNoMorePackets(t, l)
		})
	}
}

// TestWOLWakeCanceled: canceling during the interval stops the sequence
// and says how far it got. The listener drives the test: it cancels once
// the first packet arrived.
func TestWOLWakeCanceled(t *testing.T) {
	l, port := listenUDP(t, "udp4", "127.0.0.1:0")
	w, err := NewWOL(WOLConfig{MAC: "00:1b:21:3c:4d:5e", Broadcast: "127.0.0.1", Port: port, Repeat: 3, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- w.Wake(ctx) }()
	readPackets(t, l, 1)
	cancel()
	err = <-done
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "1 of 3 packets sent") {
		t.Fatalf("Wake after cancel: %v", err)
	}
	if !strings.HasPrefix(err.Error(), "wol 00:1b:21:3c:4d:5e via 127.0.0.1:"+strconv.Itoa(port)+": ") {
		t.Fatalf("error text: %q", err)
	}
	assertNoMorePackets(t, l)
}

func soBroadcast(t *testing.T, c *net.UDPConn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		v, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_BROADCAST)
	}); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return v
}

// TestWOLSoBroadcast: SO_BROADCAST is on only for a broadcast destination
// (Go turns it on for every UDP socket by default). Dialing UDP sends
// nothing, so the broadcast case puts no packet on the network.
func TestWOLSoBroadcast(t *testing.T) {
	ctx := ctxT(t)
	uni, err := NewWOL(WOLConfig{MAC: "00:1b:21:3c:4d:5e", Broadcast: "127.0.0.1", Port: 9})
	if err != nil {
		t.Fatal(err)
	}
	c, err := uni.dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if v := soBroadcast(t, c); v != 0 {
		t.Fatalf("SO_BROADCAST = %d for a unicast destination, want 0", v)
	}

	bc, err := NewWOL(WOLConfig{MAC: "00:1b:21:3c:4d:5e"})
	if err != nil {
		t.Fatal(err)
	}
	c2, err := bc.dial(ctx)
	if errors.Is(err, syscall.ENETUNREACH) {
		t.Skip("no route for 255.255.255.255 on this machine")
	}
	if err != nil {
		t.Fatalf("dial 255.255.255.255: %v", err)
	}
	defer c2.Close()
	if v := soBroadcast(t, c2); v != 1 {
		t.Fatalf("SO_BROADCAST = %d for 255.255.255.255, want 1", v)
	}
}

func TestWOLAwake(t *testing.T) {
	ctx := ctxT(t)
	w, err := NewWOL(WOLConfig{MAC: "00:1b:21:3c:4d:5e"})
	if err != nil {
		t.Fatal(err)
	}
	if up, err := w.Awake(ctx); up || err != nil {
		t.Fatalf("Awake without probe = %v, %v; want false, nil", up, err)
	}
	probeErr := errors.New("connection refused")
	var calls int
	w.probe = func(context.Context) error { calls++; return probeErr }
	if up, err := w.Awake(ctx); up || err != nil {
		t.Fatalf("Awake with failing probe = %v, %v; want false, nil", up, err)
	}
	w.probe = func(context.Context) error { calls++; return nil }
	if up, err := w.Awake(ctx); !up || err != nil {
		t.Fatalf("Awake with passing probe = %v, %v; want true, nil", up, err)
	}
	done, cancel := context.WithCancel(ctx)
	cancel()
	w.probe = func(ctx context.Context) error { calls++; return ctx.Err() }
	if up, err := w.Awake(done); up || !errors.Is(err, context.Canceled) {
		t.Fatalf("Awake with canceled ctx = %v, %v; want false, context.Canceled", up, err)
	}
	if calls != 3 {
		t.Fatalf("probe called %d times, want 3", calls)
	}
}
