package vcsim

import (
	"io"
	"log"
	"sync"
)

var quiet struct {
	mu    sync.Mutex
	depth int
	prev  io.Writer
}

// QuietStdLog discards what is written through the standard library's log
// package until restore is called: the simulator reports some requests it
// refuses ("managed object not found: …", "… does not implement: …") and
// the HTTP server its failed TLS handshakes there, on stderr. Calls nest;
// the last restore puts the previous output back. Start calls it for each
// Sim (unless Fleet.KeepStdLog) and Close restores.
//
// The log package's output is process-wide. log/slog loggers with their
// own handler are not affected, but slog.Default() with its built-in
// handler writes through package log and is silenced too: install a slog
// handler first (cmd/sundown does).
func QuietStdLog() (restore func()) {
	quiet.mu.Lock()
	defer quiet.mu.Unlock()
	if quiet.depth == 0 {
		quiet.prev = log.Writer()
		log.SetOutput(io.Discard)
	}
	quiet.depth++
	var once sync.Once
	return func() {
		once.Do(func() {
			quiet.mu.Lock()
			defer quiet.mu.Unlock()
			quiet.depth--
			if quiet.depth == 0 {
				log.SetOutput(quiet.prev)
				quiet.prev = nil
			}
		})
	}
}
