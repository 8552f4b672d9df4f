package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// TriggerRequest is the body of POST /api/v1/trigger: an external power
// source (PowerChute, a UPS network card, a script) reports the power.
type TriggerRequest struct {
	// Kind is "onbattery" (mains failed: the policy applies its delays),
	// "shutdown" (shut down now) or "clear" (mains is back; a started
	// shutdown still runs to its end).
	Kind string `json:"kind"`
	// Reason is a human sentence for the logs and notifications.
	Reason string `json:"reason,omitempty"`
	// Source names the caller, e.g. "powerchute"; when empty the server
	// sets "api <client IP>".
	Source string `json:"source,omitempty"`
}

// DrillRequest is the body of POST /api/v1/drill: rehearse the shutdown.
type DrillRequest struct {
	// Only limits the drill to these groups (empty: every step).
	Only []string `json:"only,omitempty"`
	// DryRun simulates: nothing is shut down.
	DryRun bool `json:"dry_run"`
}

// AckRequest is the body of POST /api/v1/ack: an operator acknowledges
// what the daemon reports (stops repeated notifications).
type AckRequest struct {
	// ID is what is acknowledged (an event type, a run ID, a channel
	// name); empty acknowledges everything outstanding.
	ID string `json:"id,omitempty"`
	// Note is a free comment kept in the audit log and the daemon's log.
	Note string `json:"note,omitempty"`
	// By names who acknowledges; when empty the server sets "api <client
	// IP>".
	By string `json:"by,omitempty"`
}

// TriggerKinds are the accepted TriggerRequest.Kind values.
var TriggerKinds = []string{"onbattery", "shutdown", "clear"}

// Bounds of request fields.
const (
	maxText  = 500 // Reason, Source, Note, By, ID
	maxGroup = 64  // DrillRequest.Only entries
	maxOnly  = 100 // DrillRequest.Only length
)

// accepted is the body of a successful state-changing call.
type accepted struct {
	OK    bool   `json:"ok"`
	RunID string `json:"run_id,omitempty"`
}

func (s *Server) handleTrigger(w http.ResponseWriter, r *http.Request) {
	var req TriggerRequest
	if !s.admit(w, r, s.act.Trigger == nil, &req) {
		return
	}
	if req.Source == "" {
		req.Source = "api " + clientIP(r)
	}
	detail := "kind=" + req.Kind
	switch {
	case !contains(TriggerKinds, req.Kind):
		s.refuse(w, r, http.StatusBadRequest, fmt.Sprintf("kind must be one of %s, got %q", strings.Join(TriggerKinds, ", "), req.Kind), detail)
		return
	case !textOK(req.Reason) || !textOK(req.Source):
		s.refuse(w, r, http.StatusBadRequest, fmt.Sprintf("reason and source must be valid UTF-8 of at most %d bytes", maxText), detail)
		return
	}
	err := s.act.Trigger(r.Context(), req)
	s.finish(w, r, err, http.StatusAccepted, accepted{OK: true}, detail)
}

func (s *Server) handleDrill(w http.ResponseWriter, r *http.Request) {
	var req DrillRequest
	if !s.admit(w, r, s.act.Drill == nil, &req) {
		return
	}
	detail := fmt.Sprintf("dry_run=%t only=%s", req.DryRun, strings.Join(req.Only, ","))
	if len(req.Only) > maxOnly {
		s.refuse(w, r, http.StatusBadRequest, fmt.Sprintf("only: at most %d groups", maxOnly), "")
		return
	}
	for _, g := range req.Only {
		if g == "" || len(g) > maxGroup || !utf8.ValidString(g) || strings.ContainsAny(g, "\r\n\x00") {
			s.refuse(w, r, http.StatusBadRequest, fmt.Sprintf("only: %q is not a group name", g), "")
			return
		}
	}
	id, err := s.act.Drill(r.Context(), req)
	s.finish(w, r, err, http.StatusAccepted, accepted{OK: true, RunID: id}, detail+" run="+id)
}

func (s *Server) handleAck(w http.ResponseWriter, r *http.Request) {
	var req AckRequest
	if !s.admit(w, r, s.act.Ack == nil, &req) {
		return
	}
	if req.By == "" {
		req.By = "api " + clientIP(r)
	}
	detail := "id=" + req.ID
	if !textOK(req.ID) || !textOK(req.Note) || !textOK(req.By) {
		s.refuse(w, r, http.StatusBadRequest, fmt.Sprintf("id, note and by must be valid UTF-8 of at most %d bytes", maxText), "")
		return
	}
	err := s.act.Ack(r.Context(), req)
	s.finish(w, r, err, http.StatusOK, accepted{OK: true}, detail)
}

// admit runs the checks every state-changing call passes, in order: a
// token is configured, the client is under its rate, the token matches,
// the action exists, the body is small, strict JSON. It answers and audits
// a refusal itself and reports whether to go on.
func (s *Server) admit(w http.ResponseWriter, r *http.Request, missing bool, into any) bool {
	if s.opt.Token.IsZero() {
		s.refuse(w, r, http.StatusForbidden, "state-changing calls are disabled: no API token is configured (set api.token_file in the config)", "")
		return false
	}
	if ok, wait := s.limiter.allow(clientIP(r), s.opt.Now()); !ok {
		secs := int(wait.Seconds())
		if time.Duration(secs)*time.Second < wait {
			secs++
		}
		w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
		s.refuse(w, r, http.StatusTooManyRequests, fmt.Sprintf("too many calls from %s; retry in %d s", clientIP(r), max(secs, 1)), "")
		return false
	}
	switch tok, ok := bearer(r); {
	case !ok:
		w.Header().Set("WWW-Authenticate", `Bearer realm="sundown"`)
		s.refuse(w, r, http.StatusUnauthorized, "missing bearer token (Authorization: Bearer <token>)", "")
		return false
	case !equalSecret(tok, s.opt.Token.Reveal()):
		w.Header().Set("WWW-Authenticate", `Bearer realm="sundown", error="invalid_token"`)
		s.refuse(w, r, http.StatusUnauthorized, "wrong bearer token", "")
		return false
	}
	if missing {
		s.refuse(w, r, http.StatusNotImplemented, "this daemon does not offer "+r.URL.Path, "")
		return false
	}
	if code, msg := decodeStrict(w, r, into); code != 0 {
		s.refuse(w, r, code, msg, "")
		return false
	}
	return true
}

// finish answers an action's result and audits it.
func (s *Server) finish(w http.ResponseWriter, r *http.Request, err error, okCode int, body any, detail string) {
	if err == nil {
		writeJSON(w, okCode, body)
		s.audit(r, okCode, "", detail)
		return
	}
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrInvalid):
		code = http.StatusBadRequest
	case errors.Is(err, ErrConflict):
		code = http.StatusConflict
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		code = http.StatusServiceUnavailable
	}
	s.refuse(w, r, code, err.Error(), detail)
}

func (s *Server) refuse(w http.ResponseWriter, r *http.Request, code int, msg, detail string) {
	writeError(w, code, msg)
	s.audit(r, code, msg, detail)
}

// decodeStrict reads a JSON object of at most MaxBodyBytes into v:
// unknown fields, trailing data and wrong types are errors. It returns 0
// on success, else the status and the message to answer.
func decodeStrict(w http.ResponseWriter, r *http.Request, v any) (int, string) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, _ := strings.Cut(ct, ";")
		if !strings.EqualFold(strings.TrimSpace(mt), "application/json") {
			return http.StatusUnsupportedMediaType, "Content-Type must be application/json, got " + strconv.Quote(mt)
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", MaxBodyBytes)
		}
		return http.StatusBadRequest, "reading the body: " + err.Error()
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return http.StatusBadRequest, "empty body; send a JSON object"
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return http.StatusBadRequest, "invalid JSON body: " + jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return http.StatusBadRequest, "invalid JSON body: data after the JSON object"
	}
	return 0, ""
}

// jsonError makes a decoding error readable without echoing much input.
func jsonError(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at byte %d: %s", se.Offset, se.Error())
	case errors.As(err, &te):
		if te.Field != "" {
			return fmt.Sprintf("field %q must be %s, got %s", te.Field, jsonType(te.Type.Kind().String()), te.Value)
		}
		return "want a JSON object, got " + te.Value
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected end of input"
	}
	msg := err.Error()
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	return strings.TrimPrefix(msg, "json: ")
}

func jsonType(kind string) string {
	switch kind {
	case "slice":
		return "an array"
	case "struct", "map":
		return "an object"
	case "bool":
		return "a boolean"
	}
	return "a " + kind
}

// bearer returns the token of an "Authorization: Bearer <token>" header.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// equalSecret compares in constant time, also for different lengths.
func equalSecret(got, want string) bool {
	g, w := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

// clientIP is the peer's IP. Headers such as X-Forwarded-For are ignored:
// the API is meant for loopback and a trusted network, not behind a proxy.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// clip bounds what a client controls before it reaches a log.
func clip(s string) string {
	const n = 300
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

func textOK(s string) bool { return len(s) <= maxText && utf8.ValidString(s) }

// auditLine is one line of the audit log. It never holds the token or any
// header: only what the server decided and why.
type auditLine struct {
	Time    time.Time `json:"time"`
	Remote  string    `json:"remote"`
	Method  string    `json:"method"`
	Path    string    `json:"path"`
	Outcome string    `json:"outcome"` // accepted, refused, failed
	Status  int       `json:"status"`
	Reason  string    `json:"reason,omitempty"`
	Detail  string    `json:"detail,omitempty"`
}

func (s *Server) audit(r *http.Request, code int, reason, detail string) {
	l := auditLine{
		Time: s.opt.Now(), Remote: clientIP(r), Method: r.Method, Path: clip(r.URL.Path),
		Status: code, Reason: clip(reason), Detail: clip(detail), Outcome: "accepted",
	}
	switch {
	case code >= 500:
		l.Outcome = "failed"
	case code >= 400:
		l.Outcome = "refused"
	}
	if s.opt.AuditLog == nil {
		s.log.Info("api call", "remote", l.Remote, "method", l.Method, "path", l.Path,
			"outcome", l.Outcome, "status", l.Status, "reason", l.Reason, "detail", l.Detail)
		return
	}
	b, err := json.Marshal(l)
	if err != nil {
		return
	}
	s.auditMu.Lock()
	defer s.auditMu.Unlock()
	if _, err := s.opt.AuditLog.Write(append(b, '\n')); err != nil {
		s.log.Error("api: audit log write failed", "err", err)
	}
}
