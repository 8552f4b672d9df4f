package upsmon

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// numLogins asks upsd "GET NUMLOGINS ups" on a fresh connection: the one
// readiness check this package needs (not a NUT client; that is
// internal/nut).
func numLogins(addr, ups string) (int, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return 0, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
		return 0, fmt.Errorf("GET NUMLOGINS %s: %w", ups, err)
	}
	if _, err := c.Write([]byte("GET NUMLOGINS " + ups + "\n")); err != nil {
		return 0, fmt.Errorf("GET NUMLOGINS %s: %w", ups, err)
	}
	line, err := bufio.NewReader(io.LimitReader(c, 4096)).ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("GET NUMLOGINS %s: %w", ups, err)
	}
	line = strings.TrimRight(line, "\r\n")
	n, err := strconv.Atoi(strings.TrimPrefix(line, "NUMLOGINS "+ups+" "))
	if err != nil {
		return 0, fmt.Errorf("GET NUMLOGINS %s: server answered %q", ups, line)
	}
	return n, nil
}
