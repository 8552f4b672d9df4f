package api

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"math"
	"net/http"
	"strings"
	"time"
)

//go:embed web/index.html web/style.css web/app.js
var webFS embed.FS

// pageCSP allows nothing but this server: no inline script or style, no
// external resource, no framing.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

type pageRenderer struct {
	tmpl   *template.Template
	assets http.Handler
}

func newPageRenderer() *pageRenderer {
	t := template.Must(template.New("index.html").Funcs(template.FuncMap{
		"dur":  fmtDur,
		"durp": fmtDurPtr,
		"pct":  fmtPct,
		"num": func(p *float64) float64 {
			if p == nil {
				return 0
			}
			return *p
		},
		"clock":    clock,
		"rfc3339":  func(t time.Time) string { return t.Format(time.RFC3339) },
		"upsLevel": upsLevel,
		"evLevel":  eventLevel,
		"icon":     icon,
		"join":     strings.Join,
		"upper":    strings.ToUpper,
		"stepText": stepText,
	}).ParseFS(webFS, "web/index.html"))
	sub, err := fs.Sub(webFS, "web")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return &pageRenderer{tmpl: t, assets: http.FileServerFS(sub)}
}

func (s *Server) servePage(w http.ResponseWriter, r *http.Request) {
	var b bytes.Buffer
	if err := s.page.tmpl.Execute(&b, pageModelOf(s.statusOf(s.d.Snapshot()))); err != nil {
		s.log.Error("api: render status page", "err", err)
		writeError(w, http.StatusInternalServerError, "rendering the status page failed")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("X-Frame-Options", "DENY")
	_, _ = w.Write(b.Bytes())
}

func (s *Server) handleAsset(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/assets/")
	if name != "style.css" && name != "app.js" {
		writeError(w, http.StatusNotFound, "no such asset: "+r.URL.Path)
		return
	}
	w.Header().Set("Cache-Control", "no-cache")
	r2 := r.Clone(r.Context())
	r2.URL.Path = "/" + name
	s.page.assets.ServeHTTP(w, r2)
}

// pageModel is what the template renders: the status plus what the page
// derives from it (the same derivations live in web/app.js).
type pageModel struct {
	S        Status
	Level    string // ok, warn, crit
	Headline string
	Timeline *timeline
}

type timeline struct {
	Span  float64 // seconds from the first start to the scale's end
	Title string
	Rows  []timelineRow
}

type timelineRow struct {
	Step
	X, W   float64 // bar position and width in a 0..1000 viewBox; W 0: no bar
	Timing string
}

func pageModelOf(s Status) pageModel {
	m := pageModel{S: s, Level: "ok", Headline: "All power supplies OK"}
	switch s.Decision.Kind {
	case "shutdown":
		m.Level, m.Headline = "crit", "Shutdown decided"
	case "warn":
		m.Level, m.Headline = "warn", "Warning"
		if s.Decision.ETASeconds != nil {
			m.Headline = "Warning: shutdown in " + fmtDur(*s.Decision.ETASeconds)
		}
	}
	if sh := s.Shutdown; sh != nil {
		m.Timeline = timelineOf(sh, s.At)
		if sh.State == "running" {
			m.Level = "crit"
			m.Headline = runName(sh) + " running"
			if sh.DryRun || sh.Kind == "restore" || sh.Kind == "drill" {
				m.Level = "warn"
			}
		}
	}
	return m
}

// runName names a run for people: "Shutdown", "Shed stage", "Drill",
// "Restore", with "(dry run)" when it is one.
func runName(sh *Shutdown) string {
	name := map[string]string{"shed": "Shed stage", "drill": "Drill", "restore": "Restore"}[sh.Kind]
	if name == "" {
		name = "Shutdown"
		if sh.DryRun {
			name = "Drill"
		}
	}
	if sh.DryRun {
		name += " (dry run)"
	}
	return name
}

func timelineOf(sh *Shutdown, now time.Time) *timeline {
	t0 := sh.Started
	for _, st := range sh.Steps {
		if !st.Start.IsZero() && (t0.IsZero() || st.Start.Before(t0)) {
			t0 = st.Start
		}
	}
	end := now
	if !sh.Ended.IsZero() {
		end = sh.Ended
	}
	span := 0.0
	if !t0.IsZero() {
		span = max(end.Sub(t0).Seconds(), sh.EstimateSeconds)
	}
	for _, st := range sh.Steps {
		if !st.End.IsZero() {
			span = max(span, st.End.Sub(t0).Seconds())
		}
	}
	span = max(span, 1)
	tl := &timeline{Span: span, Title: fmt.Sprintf("%s %s — %d of %d steps ended", runName(sh), sh.State, sh.Counts["done"]+sh.Counts["failed"]+sh.Counts["skipped"], len(sh.Steps))}
	for _, st := range sh.Steps {
		row := timelineRow{Step: st, Timing: "—"}
		if st.State == "pending" {
			row.Timing = "not started"
		}
		if !st.Start.IsZero() {
			stop := st.End
			if stop.IsZero() {
				stop = end
			}
			x := st.Start.Sub(t0).Seconds() / span * 1000
			w := max(stop.Sub(st.Start).Seconds()/span*1000, 4)
			row.X, row.W = round1(x), round1(math.Min(w, 1000-x))
			row.Timing = fmt.Sprintf("+%s", fmtDur(st.Start.Sub(t0).Seconds()))
			if st.ElapsedSeconds != nil {
				row.Timing += ", " + fmtDur(*st.ElapsedSeconds)
			}
		}
		tl.Rows = append(tl.Rows, row)
	}
	return tl
}

func round1(v float64) float64 { return math.Round(v*10) / 10 }

// fmtDur prints seconds for people: "42 s", "12 min 5 s", "1 h 3 min".
func fmtDur(sec float64) string {
	if sec < 0 {
		return "—"
	}
	if sec < 10 && sec != math.Trunc(sec) {
		return fmt.Sprintf("%.1f s", sec)
	}
	n := int64(sec)
	switch {
	case n < 60:
		return fmt.Sprintf("%d s", n)
	case n < 3600:
		if n%60 == 0 {
			return fmt.Sprintf("%d min", n/60)
		}
		return fmt.Sprintf("%d min %d s", n/60, n%60)
	}
	return fmt.Sprintf("%d h %d min", n/3600, n%3600/60)
}

func fmtDurPtr(p *float64) string {
	if p == nil {
		return "unknown"
	}
	return fmtDur(*p)
}

func fmtPct(p *float64) string {
	if p == nil {
		return "unknown"
	}
	return fmt.Sprintf("%.0f %%", *p)
}

func clock(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.Local().Format("15:04:05")
}

// upsLevel grades a UPS card: crit (critical, low battery, forced
// shutdown), warn (on battery, not OK communication, alarm), ok.
func upsLevel(u UPS) string {
	has := func(tok string) bool { return contains(u.Status, tok) }
	switch {
	case u.Critical || u.LowBattery || has("FSD"):
		return "crit"
	case u.OnBattery || u.Comm != "ok" || u.Alarm != "" || has("ALARM") || has("OFF") || u.ReplaceBattery:
		return "warn"
	}
	return "ok"
}

func eventLevel(typ string) string {
	switch typ {
	case "ONLINE", "COMMOK", "NOTOFF", "NOTBYPASS", "NOTALARM", "NOTOVER", "NOTCAL":
		return "ok"
	case "LOWBATT", "FSD", "SHUTDOWN", "NOCOMM", "OFF":
		return "crit"
	}
	return "warn"
}

// icon is the symbol shown beside a level's text (never instead of it).
func icon(level string) string {
	switch level {
	case "ok":
		return "✓"
	case "crit":
		return "✕"
	}
	return "!"
}

// stepText is a step's state for people, e.g. "running: shutdown",
// "done (escalated)", "failed: timeout".
func stepText(st Step) string {
	switch st.State {
	case "running":
		if st.Action != "" {
			return "running: " + st.Action
		}
		return "running"
	case "done":
		if st.Outcome != "" && st.Outcome != "done" {
			return "done (" + st.Outcome + ")"
		}
		return "done"
	case "failed":
		return "failed"
	}
	return st.State
}
