package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/app"
	"github.com/sundown-ups/sundown/internal/config"
	"github.com/sundown-ups/sundown/internal/nut/nuttest"
	"github.com/sundown-ups/sundown/internal/peer"
	"github.com/sundown-ups/sundown/internal/provider/proxmox/pvetest"
)

const chromiumPath = "/usr/bin/chromium"

// chromium is a headless browser started by a test.
type chromium struct {
	cmd   *exec.Cmd
	cdp   *cdpClient
	wsURL string
}

// startChromium starts a headless chromium that can reach nothing but
// loopback, and connects to its DevTools endpoint. Cleanup closes it
// (Browser.close, then SIGKILL to its own process group if it lingers).
func startChromium(t *testing.T, ctx context.Context) *chromium {
	t.Helper()
	bin := peer.NeedBinary(t, chromiumPath, "apt-get install -y chromium")
	dir := t.TempDir()
	logf, err := os.Create(filepath.Join(dir, "chromium.log"))
	if err != nil {
		t.Fatal(err)
	}
	profile := filepath.Join(dir, "profile")
	cmd := exec.Command(bin,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-default-apps", "--disable-extensions", "--no-default-browser-check",
		"--disable-breakpad", "--disable-domain-reliability", "--no-pings", "--mute-audio",
		"--disable-features=Translate,OptimizationHints,MediaRouter,InterestFeedContentSuggestions",
		// Loopback only: every other name fails to resolve, and every
		// non-loopback connection goes to a proxy port nobody listens on.
		"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
		"--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>;127.0.0.1",
		"--window-size=1280,900", "--hide-scrollbars",
		"--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
		"--user-data-dir="+profile, "about:blank")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its helpers stay in its group
	if err := cmd.Start(); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	c := &chromium{cmd: cmd}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = logf.Close()
		close(exited)
	}()
	t.Cleanup(func() {
		if c.cdp != nil {
			cctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			_ = c.cdp.call(cctx, "", "Browser.close", nil, nil)
			cancel()
			c.cdp.Close()
		}
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})
	// Chromium writes "PORT\n/devtools/browser/ID" once it listens.
	portFile := filepath.Join(profile, "DevToolsActivePort")
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, err := os.ReadFile(portFile)
		if lines := strings.Split(strings.TrimSpace(string(b)), "\n"); err == nil && len(lines) == 2 {
			if _, perr := strconv.Atoi(lines[0]); perr == nil {
				c.wsURL = "ws://127.0.0.1:" + lines[0] + lines[1]
				break
			}
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "chromium.log"))
			t.Fatalf("chromium exited before listening:\n%s", log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("chromium did not write DevToolsActivePort within 30 s")
		}
	}
	c.cdp, err = newCDP(ctx, c.wsURL)
	if err != nil {
		t.Fatalf("connect to chromium: %v", err)
	}
	return c
}

// openPage opens a tab of w×h and returns its CDP session.
func (c *chromium) openPage(t *testing.T, ctx context.Context, w, h int) string {
	t.Helper()
	var tgt struct {
		TargetID string `json:"targetId"`
	}
	if err := c.cdp.call(ctx, "", "Target.createTarget", map[string]any{"url": "about:blank"}, &tgt); err != nil {
		t.Fatal(err)
	}
	var att struct {
		SessionID string `json:"sessionId"`
	}
	if err := c.cdp.call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": tgt.TargetID, "flatten": true}, &att); err != nil {
		t.Fatal(err)
	}
	for _, m := range []struct {
		method string
		params map[string]any
	}{
		{"Page.enable", nil},
		{"Runtime.enable", nil},
		{"Emulation.setDeviceMetricsOverride", map[string]any{"width": w, "height": h, "deviceScaleFactor": 1, "mobile": false}},
	} {
		if err := c.cdp.call(ctx, att.SessionID, m.method, m.params, nil); err != nil {
			t.Fatal(err)
		}
	}
	return att.SessionID
}

// waitJS polls a JavaScript expression until it returns true.
func waitJS(t *testing.T, ctx context.Context, c *cdpClient, session, what, expr string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	var last string
	for {
		v, err := c.eval(ctx, session, "(function(){try{return !!("+expr+")}catch(e){return 'error: '+e.message}})()")
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if string(v) == "true" {
			return
		}
		last = string(v)
		if time.Now().After(deadline) {
			dom, _ := c.eval(ctx, session, "document.querySelector('main') ? document.querySelector('main').innerText : document.documentElement.outerHTML")
			t.Fatalf("timed out after %s waiting for %s (last %s); page text:\n%s", limit, what, last, dom)
		}
		time.Sleep(100 * time.Millisecond) // polling a real browser
	}
}

func evalString(t *testing.T, ctx context.Context, c *cdpClient, session, expr string) string {
	t.Helper()
	v, err := c.eval(ctx, session, expr)
	if err != nil {
		t.Fatal(err)
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return string(v)
	}
	return s
}

// e2eSite is a real daemon watching a scripted NUT server and planning a
// shutdown of a fake Proxmox VE node, with the API served on loopback.
type e2eSite struct {
	nut  *nuttest.Server
	pve  *pvetest.Server
	app  *app.App
	base string
}

func startSite(t *testing.T, ctx context.Context) *e2eSite {
	t.Helper()
	nut := nuttest.NewServer()
	if err := nut.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nut.Close() })
	nut.AddUser("sundown", "nut-pw", nuttest.Perms{Upsmon: "secondary"})
	nut.AddUPS("rack", "rack UPS", map[string]string{
		"ups.status": "OL CHRG", "battery.charge": "100", "battery.runtime": "2400", "ups.load": "34",
		"device.mfr": "APC", "device.model": "Smart-UPS 1500",
	})
	slow := func(ms int) time.Duration { return time.Duration(ms) * time.Millisecond }
	pve, err := pvetest.NewServer(pvetest.Fleet{
		Nodes: []pvetest.Node{{Name: "pve-1"}},
		Guests: []pvetest.Guest{
			{Node: "pve-1", VMID: 101, Name: "web-1", Running: true, ShutdownDelay: slow(1500)},
			{Node: "pve-1", VMID: 102, Name: "web-2", Running: true, ShutdownDelay: slow(2500)},
			{Node: "pve-1", VMID: 103, Name: "app-1", Running: true, ShutdownDelay: slow(2000)},
			{Node: "pve-1", VMID: 104, Name: "db-1", Running: true, ShutdownDelay: slow(3000)},
			{Node: "pve-1", VMID: 201, Name: "dns", Type: "lxc", Running: true, ShutdownDelay: slow(800)},
		},
		NodeShutdownDelay: slow(300),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pve.Close)

	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	yml := fmt.Sprintf(`state_dir: %q
power: {poll_interval: 100ms, deadtime: 5s, debounce: 300ms, runtime_margin: 60s}
ups:
  - name: rack
    nut: {address: %q, ups: rack, username: sundown, password_file: %q}
targets:
  - name: pve
    proxmox: {url: %q, token_id: "sundown@pve!sundown", secret_file: %q, ca_file: %q}
    hosts: {shutdown: true, shutdown_timeout: 10s}
shutdown:
  default_action: ["shutdown 10s", "poweroff 5s"]
  caps: {global: 4, per_host: 2}
  groups:
    - {name: web, select: {names: ["web-*"]}, depends_on: [app]}
    - {name: app, select: {names: ["app-*"]}, depends_on: [db]}
    - {name: db, select: {names: ["db-*"]}}
`, dir, nut.Addr(), write("nut.pw", "nut-pw\n"), pve.URL(), write("pve.secret", "secret\n"), pve.CAFile())
	cfg, err := config.Load(write("sundown.yaml", yml))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	logBuf := &syncBuffer{}
	a, err := app.New(cfg, bufLog(logBuf), app.Options{Act: true})
	if err != nil {
		t.Fatal(err)
	}
	actx, stopApp := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- a.Run(actx) }()
	t.Cleanup(func() {
		stopApp()
		if err := <-ran; err != nil {
			t.Errorf("app: %v", err)
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", logBuf)
		}
	})

	channels := func() []ChannelHealth {
		return []ChannelHealth{
			{Name: "mail-oncall", Pending: 0},
			{Name: "webhook-chat", Down: true, LastError: "POST https://chat.example/hook: dial tcp: connection refused", LastErrorAt: time.Now().Add(-40 * time.Second), Failed: 2, Pending: 1},
		}
	}
	api := New(a, Actions{}, Options{Channels: channels, Log: bufLog(logBuf)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stopAPI := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- api.Serve(sctx, ln) }()
	t.Cleanup(func() {
		stopAPI()
		if err := <-served; err != nil {
			t.Errorf("api: %v", err)
		}
	})
	return &e2eSite{nut: nut, pve: pve, app: a, base: "http://" + ln.Addr().String()}
}

// TestBrowserLiveUpdates drives a real headless Chromium against a real
// daemon: the page shows the UPS on line, then — without a reload — on
// battery, then the shutdown's steps as they run.
func TestBrowserLiveUpdates(t *testing.T) {
	if testing.Short() {
		t.Skip("starts chromium")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	br := startChromium(t, ctx)
	site := startSite(t, ctx)
	c := br.cdp
	page := br.openPage(t, ctx, 1280, 900)
	if err := c.call(ctx, page, "Page.navigate", map[string]any{"url": site.base + "/"}, nil); err != nil {
		t.Fatal(err)
	}
	upsText := `document.querySelector('[data-ups="rack"] .ups-status .text').textContent`
	waitJS(t, ctx, c, page, "the UPS on line", upsText+` === 'on line'`, 20*time.Second)
	waitJS(t, ctx, c, page, "the live stream", `document.getElementById('live').textContent === 'live'`, 10*time.Second)
	waitJS(t, ctx, c, page, "the plan", `/\d+ steps, estimated/.test(document.querySelector('#plan .plan-summary').textContent)`, 20*time.Second)
	if got := evalString(t, ctx, c, page, `document.querySelector('[data-channel="webhook-chat"] .ch-state').textContent`); !strings.Contains(got, "down") {
		t.Errorf("the down channel shows %q", got)
	}
	// A marker that a reload would lose.
	if _, err := c.eval(ctx, page, `window.__sundownMarker = 'same page'`); err != nil {
		t.Fatal(err)
	}

	site.nut.SetVars("rack", map[string]string{"ups.status": "OB DISCHRG", "battery.charge": "87", "battery.runtime": "1260"})
	waitJS(t, ctx, c, page, "the UPS on battery", upsText+` === 'on battery'`, 20*time.Second)
	if got := evalString(t, ctx, c, page, `window.__sundownMarker`); got != "same page" {
		t.Fatalf("the page was reloaded (marker %q): updates must come in place", got)
	}
	waitJS(t, ctx, c, page, "the warning", `document.getElementById('overall').textContent.indexOf('Warning') >= 0`, 10*time.Second)
	waitJS(t, ctx, c, page, "the ONBATT event", `document.getElementById('events').textContent.indexOf('ONBATT') >= 0`, 10*time.Second)
	if got := evalString(t, ctx, c, page, `document.querySelector('[data-ups="rack"] .ups-runtime').textContent`); got != "21 min" {
		t.Errorf("runtime shows %q, want 21 min", got)
	}

	// Low battery: the daemon shuts the site down; the timeline shows the
	// steps as they run.
	site.nut.SetVars("rack", map[string]string{"ups.status": "OB DISCHRG LB", "battery.charge": "18", "battery.runtime": "240"})
	waitJS(t, ctx, c, page, "running steps", `document.querySelectorAll('#plan .step.st-running').length > 0`, 30*time.Second)
	waitJS(t, ctx, c, page, "finished steps beside pending ones",
		`document.querySelectorAll('#plan .step.st-done').length >= 3 && document.querySelectorAll('#plan .step.st-pending, #plan .step.st-running').length > 0`, 30*time.Second)
	if os.Getenv("SUNDOWN_SCREENSHOT") == "1" {
		screenshot(t, ctx, c, page, filepath.Join("..", "..", "docs", "status-page.png"))
	}
	if got := evalString(t, ctx, c, page, `window.__sundownMarker`); got != "same page" {
		t.Fatalf("the page was reloaded during the shutdown (marker %q)", got)
	}
	waitJS(t, ctx, c, page, "the shutdown done", `document.querySelector('#plan .run-title').textContent.indexOf('Shutdown done') === 0`, 60*time.Second)
	// A phone-sized window: everything fits, no horizontal scrolling.
	narrow := br.openPage(t, ctx, 400, 860)
	if err := c.call(ctx, narrow, "Page.navigate", map[string]any{"url": site.base + "/"}, nil); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, c, narrow, "the narrow page live", `document.getElementById('live').textContent === 'live'`, 10*time.Second)
	if got := evalString(t, ctx, c, narrow, `document.documentElement.scrollWidth + ' <= ' + window.innerWidth`); !narrowFits(got) {
		t.Errorf("the page scrolls sideways at 400 px: %s", got)
	}
	if p := os.Getenv("SUNDOWN_SCREENSHOT_NARROW"); p != "" {
		screenshot(t, ctx, c, narrow, p)
	}
	rows := evalString(t, ctx, c, page, `Array.from(document.querySelectorAll('#plan .step')).map(function(r){return r.querySelector('.step-name').textContent.split(' ')[0]+'='+r.querySelector('.step-state').textContent}).join('; ')`)
	if strings.Contains(rows, "pending") || strings.Contains(rows, "running") || strings.Contains(rows, "failed") || !strings.Contains(rows, "db-1=done") {
		t.Errorf("steps after the shutdown: %s", rows)
	}
	// The same state as the API: the page rendered the public JSON.
	st, err := FetchStatus(ctx, site.base)
	if err != nil {
		t.Fatal(err)
	}
	if st.Shutdown == nil || st.Shutdown.State != "done" || st.Shutdown.Counts["done"] != len(st.Shutdown.Steps) {
		t.Errorf("API shutdown %+v", st.Shutdown)
	}
}

func narrowFits(s string) bool {
	var w, iw int
	_, err := fmt.Sscanf(s, "%d <= %d", &w, &iw)
	return err == nil && w <= iw
}

// screenshot saves a PNG of the page as it is.
func screenshot(t *testing.T, ctx context.Context, c *cdpClient, session, path string) {
	t.Helper()
	var shot struct {
		Data string `json:"data"`
	}
	if err := c.call(ctx, session, "Page.captureScreenshot", map[string]any{"format": "png"}, &shot); err != nil {
		t.Fatal(err)
	}
	png, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatalf("write screenshot: %v", err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(png))
}
