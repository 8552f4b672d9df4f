package wake

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"
	"time"

	"github.com/sundown-ups/sundown/internal/config"
)

// WOL defaults.
const (
	DefaultWOLBroadcast = "255.255.255.255"
	DefaultWOLPort      = 9
	DefaultWOLRepeat    = 3
	DefaultWOLInterval  = time.Second
)

// WOLConfig configures a Wake-on-LAN waker. Zero values take the defaults.
type WOLConfig struct {
	// MAC of the NIC to wake: aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff,
	// aabb.ccdd.eeff or aabbccddeeff. Required.
	MAC string
	// SecureOn is the optional 6-byte SecureOn password, written like a
	// MAC address. Empty: none.
	SecureOn config.Secret
	// Broadcast is the IP address the packet is sent to: the limited
	// broadcast 255.255.255.255 (default), a subnet's directed broadcast
	// (e.g. 192.168.1.255, needed when the sender has several interfaces),
	// or a unicast address (a relay, or loopback in tests).
	Broadcast string
	// Port is the UDP destination port: 9 (discard, default) or 7.
	Port int
	// Repeat is how many packets to send (default 3): WOL is fire and
	// forget, and a switch port that is still coming up drops packets.
	Repeat int
	// Interval between packets (default 1s).
	Interval time.Duration
	// Probe, when set, tells Awake whether the machine is up: nil means
	// awake. Typically the Check method of a readiness probe from package
	// ready (a TCP connect to the host's SSH or management port).
	// Without a probe Awake reports false, nil: WOL cannot tell.
	Probe func(ctx context.Context) error
}

// WOL wakes a machine with Wake-on-LAN magic packets over UDP.
type WOL struct {
	mac      net.HardwareAddr
	packet   []byte
	addr     *net.UDPAddr
	repeat   int
	interval time.Duration
	probe    func(ctx context.Context) error
	target   string
}

var _ Waker = (*WOL)(nil)

// NewWOL validates cfg and builds the magic packet. Errors name the bad
// field; the SecureOn password never appears in them.
func NewWOL(cfg WOLConfig) (*WOL, error) {
	mac, err := ParseMAC(cfg.MAC)
	if err != nil {
		return nil, fmt.Errorf("wol mac: %w", err)
	}
	if mac[0]&1 != 0 {
		return nil, fmt.Errorf("wol mac %s: a group (multicast/broadcast) address cannot be a NIC's address", mac)
	}
	if isZero(mac) {
		return nil, fmt.Errorf("wol mac %s: the all-zero address cannot be a NIC's address", mac)
	}
	var secureOn []byte
	if !cfg.SecureOn.IsZero() {
		pw, err := ParseMAC(cfg.SecureOn.Reveal())
		if err != nil {
			// The parse error quotes its input: replace it.
			return nil, errors.New("wol secureon: invalid password: want 6 bytes written like a MAC address (aa:bb:cc:dd:ee:ff)")
		}
		secureOn = pw
	}
	bcast := cfg.Broadcast
	if bcast == "" {
		bcast = DefaultWOLBroadcast
	}
	ip := net.ParseIP(bcast)
	if ip == nil {
		return nil, fmt.Errorf("wol broadcast %q: not an IP address", bcast)
	}
	if ip.IsUnspecified() || ip.IsMulticast() {
		return nil, fmt.Errorf("wol broadcast %s: want a broadcast or unicast address", ip)
	}
	port := cfg.Port
	if port == 0 {
		port = DefaultWOLPort
	}
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("wol port %d: out of range 1-65535", port)
	}
	repeat := cfg.Repeat
	if repeat == 0 {
		repeat = DefaultWOLRepeat
	}
	if repeat < 1 || repeat > 100 {
		return nil, fmt.Errorf("wol repeat %d: want 1-100", repeat)
	}
	interval := cfg.Interval
	if interval == 0 {
		interval = DefaultWOLInterval
	}
	if interval < 0 {
		return nil, fmt.Errorf("wol interval %s: negative", interval)
	}
	pkt, err := MagicPacket(mac, secureOn)
	if err != nil {
		return nil, fmt.Errorf("wol: %w", err)
	}
	addr := &net.UDPAddr{IP: ip, Port: port}
	return &WOL{
		mac:      mac,
		packet:   pkt,
		addr:     addr,
		repeat:   repeat,
		interval: interval,
		probe:    cfg.Probe,
		target:   mac.String() + " via " + addr.String(),
	}, nil
}

// String names the waker in logs: "wol aa:bb:cc:dd:ee:ff via 255.255.255.255:9".
func (w *WOL) String() string { return "wol " + w.target }

// Wake sends the magic packet Repeat times, Interval apart. It returns nil
// once all were handed to the kernel: WOL has no acknowledgement. If ctx
// ends first it returns an error saying how many packets went out.
func (w *WOL) Wake(ctx context.Context) error {
	sent, err := w.send(ctx)
	if err != nil {
		return &Error{Op: "wol", Target: w.target, Kind: classifyNet(err),
			Err: fmt.Errorf("%d of %d packets sent: %w", sent, w.repeat, err)}
	}
	return nil
}

// dial opens the UDP socket Wake writes to, with SO_BROADCAST set only
// when the destination is a broadcast address for this machine.
func (w *WOL) dial(ctx context.Context) (*net.UDPConn, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		addrs = nil // only the limited broadcast is recognised then
	}
	network := "udp4"
	if w.addr.IP.To4() == nil {
		network = "udp6"
	}
	d := net.Dialer{Control: broadcastControl(IsBroadcast(w.addr.IP, addrs))}
	c, err := d.DialContext(ctx, network, w.addr.String())
	if err != nil {
		return nil, err
	}
	return c.(*net.UDPConn), nil
}

func (w *WOL) send(ctx context.Context) (int, error) {
	c, err := w.dial(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Close()

	var timer *time.Timer
	for i := 0; i < w.repeat; i++ {
		if i > 0 {
			if timer == nil {
				timer = time.NewTimer(w.interval)
				defer timer.Stop()
			} else {
				timer.Reset(w.interval)
			}
			select {
			case <-ctx.Done():
				return i, ctx.Err()
			case <-timer.C:
			}
		}
		if err := ctx.Err(); err != nil {
			return i, err
		}
		if _, err := c.Write(w.packet); err != nil {
			return i, err
		}
	}
	return w.repeat, nil
}

// Awake runs the probe if one was configured (nil error: awake). A failing
// probe means "not awake (yet)" and is reported as false, nil; run the probe
// through ready.Wait to learn why. Without a probe Awake reports false, nil.
func (w *WOL) Awake(ctx context.Context) (bool, error) {
	if w.probe == nil {
		return false, nil
	}
	if err := w.probe(ctx); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return false, fmt.Errorf("wol awake %s: %w", w.target, ctxErr)
		}
		return false, nil
	}
	return true, nil
}

// Packet returns a copy of the magic packet Wake sends.
func (w *WOL) Packet() []byte { return append([]byte(nil), w.packet...) }

// MagicPacket builds a Wake-on-LAN magic packet: 6 bytes 0xFF, the 6-byte
// MAC 16 times, then the SecureOn password if given (102 or 108 bytes).
func MagicPacket(mac net.HardwareAddr, secureOn []byte) ([]byte, error) {
	if len(mac) != 6 {
		return nil, fmt.Errorf("magic packet: MAC has %d bytes, want 6", len(mac))
	}
	if len(secureOn) != 0 && len(secureOn) != 6 {
		return nil, fmt.Errorf("magic packet: SecureOn password has %d bytes, want 6", len(secureOn))
	}
	p := make([]byte, 0, 6+16*6+len(secureOn))
	for range 6 {
		p = append(p, 0xFF)
	}
	for range 16 {
		p = append(p, mac...)
	}
	return append(p, secureOn...), nil
}

// ParseMAC parses a 48-bit MAC address written as aa:bb:cc:dd:ee:ff,
// aa-bb-cc-dd-ee-ff, aabb.ccdd.eeff or aabbccddeeff (hex digits in either
// case). It accepts nothing else: no spaces, no mixed separators, no
// EUI-64.
func ParseMAC(s string) (net.HardwareAddr, error) {
	mac := make(net.HardwareAddr, 6)
	ok := false
	switch len(s) {
	case 17: // aa:bb:cc:dd:ee:ff or aa-bb-cc-dd-ee-ff
		sep := s[2]
		if sep != ':' && sep != '-' {
			break
		}
		ok = true
		for i := range 6 {
			if i > 0 && s[3*i-1] != sep {
				ok = false
				break
			}
			b, good := hexByte(s[3*i], s[3*i+1])
			if !good {
				ok = false
				break
			}
			mac[i] = b
		}
	case 14: // aabb.ccdd.eeff
		if s[4] != '.' || s[9] != '.' {
			break
		}
		ok = true
		for i := range 6 {
			pos := 2*i + i/2 // skip one dot per two bytes
			b, good := hexByte(s[pos], s[pos+1])
			if !good {
				ok = false
				break
			}
			mac[i] = b
		}
	case 12: // aabbccddeeff
		ok = true
		for i := range 6 {
			b, good := hexByte(s[2*i], s[2*i+1])
			if !good {
				ok = false
				break
			}
			mac[i] = b
		}
	}
	if !ok {
		return nil, fmt.Errorf("invalid MAC address %s: want aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff, aabb.ccdd.eeff or aabbccddeeff", quoteShort(s))
	}
	return mac, nil
}

func hexByte(hi, lo byte) (byte, bool) {
	h, ok1 := hexVal(hi)
	l, ok2 := hexVal(lo)
	return h<<4 | l, ok1 && ok2
}

func hexVal(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// quoteShort quotes s for an error message, cut to a sane length.
func quoteShort(s string) string {
	const max = 40
	if len(s) > max {
		return strconv.Quote(s[:max]) + "…"
	}
	return strconv.Quote(s)
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// IsBroadcast reports whether ip is an IPv4 broadcast address from this
// machine's point of view: the limited broadcast 255.255.255.255, or the
// directed broadcast of one of the local networks in addrs (as returned by
// net.InterfaceAddrs). Those are the destinations the kernel refuses
// without SO_BROADCAST; anything else is sent as unicast (a directed
// broadcast to a remote subnet is a router's business).
func IsBroadcast(ip net.IP, addrs []net.Addr) bool {
	ip4 := ip.To4()
	if ip4 == nil {
		return false
	}
	if ip4.Equal(net.IPv4bcast) {
		return true
	}
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		local := n.IP.To4()
		if local == nil {
			continue
		}
		var mask net.IPMask
		switch len(n.Mask) {
		case net.IPv4len:
			mask = n.Mask
		case net.IPv6len:
			mask = n.Mask[12:]
		default:
			continue
		}
		ones, bits := mask.Size()
		if bits != 32 || ones > 30 { // non-canonical, /31 and /32: no broadcast address
			continue
		}
		bc := make(net.IP, 4)
		for i := range 4 {
			bc[i] = local[i]&mask[i] | ^mask[i]
		}
		if bc.Equal(ip4) {
			return true
		}
	}
	return false
}

// classifyNet sorts a network error into unreachable or other.
func classifyNet(err error) Kind {
	var dnsErr *net.DNSError
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ENETUNREACH),
		errors.Is(err, syscall.EHOSTDOWN),
		errors.Is(err, syscall.ENETDOWN),
		errors.As(err, &dnsErr):
		return KindUnreachable
	case errors.As(err, &netErr) && netErr.Timeout():
		return KindUnreachable
	}
	return KindOther
}
