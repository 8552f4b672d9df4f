//go:build !unix

package local

import "os/exec"

// setProcessGroup keeps exec's default cancellation (kill the process).
func setProcessGroup(cmd *exec.Cmd) {}
