package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/sundown-ups/sundown/internal/app"
)

// streamWriteTimeout bounds one write to an event stream: a client that
// stops reading is dropped instead of holding the handler.
const streamWriteTimeout = 10 * time.Second

// handleEvents streams the status as Server-Sent Events: "event: status"
// with the Status JSON at connect and whenever it changes, and a comment
// line every heartbeat. It returns when the client goes, a write fails, or
// the server stops (Close). It starts no goroutine.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	if !s.openStream() {
		w.Header().Set("Retry-After", "10")
		writeError(w, http.StatusServiceUnavailable, "too many open event streams")
		return
	}
	defer s.closeStream()
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	snaps, cancel := s.d.Subscribe()
	defer cancel()
	beat, stopBeat := s.opt.NewTicker(s.opt.Heartbeat)
	defer stopBeat()

	write := func(b []byte) bool {
		if err := rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return false
		}
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	// The client reconnects after 3 s if the stream breaks.
	if !write([]byte("retry: 3000\n\n")) {
		return
	}
	var last []byte // the last status sent, without its time
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.stopping:
			return
		case <-beat:
			if !write([]byte(": heartbeat\n\n")) {
				return
			}
		case snap, ok := <-snaps:
			if !ok {
				return
			}
			frame, key := s.statusFrame(snap)
			if frame == nil || bytes.Equal(key, last) {
				continue // the daemon republished the same state
			}
			last = key
			if !write(frame) {
				return
			}
		}
	}
}

// statusFrame renders a snapshot as one SSE event, and a key that equals
// the previous one when nothing but the clock moved.
func (s *Server) statusFrame(snap app.Snapshot) (frame, key []byte) {
	st := s.statusOf(snap)
	data, err := json.Marshal(st)
	if err != nil {
		s.log.Error("api: encode status", "err", err)
		return nil, nil
	}
	st.At = time.Time{}
	if st.Shutdown != nil {
		steps := append([]Step(nil), st.Shutdown.Steps...)
		for i := range steps {
			if steps[i].State == "running" {
				steps[i].ElapsedSeconds = nil
			}
		}
		sh := *st.Shutdown
		sh.Steps = steps
		st.Shutdown = &sh
	}
	key, _ = json.Marshal(st)
	var b bytes.Buffer
	b.WriteString("event: status\n")
	// json.Marshal never emits a newline; split anyway so the framing can
	// never break.
	for line := range bytes.SplitSeq(data, []byte("\n")) {
		b.WriteString("data: ")
		b.Write(line)
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	return b.Bytes(), key
}

func (s *Server) openStream() bool {
	s.streamsMu.Lock()
	defer s.streamsMu.Unlock()
	if s.streams >= MaxStreams {
		return false
	}
	s.streams++
	return true
}

func (s *Server) closeStream() {
	s.streamsMu.Lock()
	s.streams--
	s.streamsMu.Unlock()
}
