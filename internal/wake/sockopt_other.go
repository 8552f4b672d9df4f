//go:build !unix

package wake

import "syscall"

// broadcastControl leaves the platform's defaults alone where SO_BROADCAST
// cannot be set the Unix way.
func broadcastControl(bool) func(network, address string, c syscall.RawConn) error {
	return nil
}
