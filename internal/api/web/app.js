// sundown status page: subscribes to /api/v1/events and redraws the
// sections in place from the Status JSON. Plain JavaScript, no build, no
// innerHTML with data (every text goes through textContent).
"use strict";
(function () {
  var SVGNS = "http://www.w3.org/2000/svg";

  function el(tag, attrs) {
    var e = document.createElement(tag);
    setAttrs(e, attrs);
    for (var i = 2; i < arguments.length; i++) add(e, arguments[i]);
    return e;
  }
  function svg(tag, attrs) {
    var e = document.createElementNS(SVGNS, tag);
    setAttrs(e, attrs);
    return e;
  }
  function setAttrs(e, attrs) {
    if (!attrs) return;
    Object.keys(attrs).forEach(function (k) {
      if (attrs[k] !== null && attrs[k] !== undefined) e.setAttribute(k, String(attrs[k]));
    });
  }
  function add(parent, c) {
    if (c === null || c === undefined || c === false) return;
    if (Array.isArray(c)) { c.forEach(function (x) { add(parent, x); }); return; }
    parent.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
  function replace(id, children) {
    var node = document.getElementById(id);
    if (!node) return null;
    while (node.firstChild) node.removeChild(node.firstChild);
    add(node, children);
    return node;
  }

  // Same wording as page.go.
  function dur(sec) {
    if (sec === null || sec === undefined) return "unknown";
    if (sec < 0) return "—";
    if (sec < 10 && sec !== Math.trunc(sec)) return sec.toFixed(1) + " s";
    var n = Math.trunc(sec);
    if (n < 60) return n + " s";
    if (n < 3600) return n % 60 === 0 ? (n / 60) + " min" : Math.trunc(n / 60) + " min " + (n % 60) + " s";
    return Math.trunc(n / 3600) + " h " + Math.trunc((n % 3600) / 60) + " min";
  }
  function pct(p) { return p === null || p === undefined ? "unknown" : Math.round(p) + " %"; }
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function clock(t) {
    if (!t) return "never";
    var d = new Date(t);
    if (isNaN(d.getTime()) || d.getFullYear() < 2) return "never";
    return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }
  function icon(level) { return level === "ok" ? "✓" : level === "crit" ? "✕" : "!"; }
  function upsLevel(u) {
    var has = function (t) { return u.status.indexOf(t) >= 0; };
    if (u.critical || u.low_battery || has("FSD")) return "crit";
    if (u.on_battery || u.comm !== "ok" || u.alarm || has("ALARM") || has("OFF") || u.replace_battery) return "warn";
    return "ok";
  }
  function eventLevel(t) {
    if (["ONLINE", "COMMOK", "NOTOFF", "NOTBYPASS", "NOTALARM", "NOTOVER", "NOTCAL"].indexOf(t) >= 0) return "ok";
    if (["LOWBATT", "FSD", "SHUTDOWN", "NOCOMM", "OFF"].indexOf(t) >= 0) return "crit";
    return "warn";
  }
  function stepText(st) {
    if (st.state === "running") return st.action ? "running: " + st.action : "running";
    if (st.state === "done") return st.outcome && st.outcome !== "done" ? "done (" + st.outcome + ")" : "done";
    return st.state;
  }
  function ms(t) { return t ? new Date(t).getTime() : 0; }

  function overall(s) {
    var level = "ok", text = "All power supplies OK";
    var d = s.decision;
    if (d.kind === "shutdown") { level = "crit"; text = "Shutdown decided"; }
    else if (d.kind === "warn") {
      level = "warn"; text = "Warning";
      if (d.eta_s !== null) text = "Warning: shutdown in " + dur(d.eta_s);
    }
    if (s.shutdown && s.shutdown.state === "running") {
      level = "crit"; text = runName(s.shutdown) + " running";
      if (s.shutdown.dry_run || s.shutdown.kind === "restore" || s.shutdown.kind === "drill") level = "warn";
    }
    var o = document.getElementById("overall");
    o.className = "overall level-" + level;
    replace("overall", [el("span", { "class": "icon", "aria-hidden": "true" }, icon(level)), " ", el("span", { "class": "text" }, text)]);
    document.title = "sundown — " + text;
  }

  function upsCards(s) {
    if (!s.ups.length) { replace("ups", el("p", { "class": "empty" }, "No UPS configured.")); return; }
    replace("ups", s.ups.map(function (u) {
      var l = upsLevel(u);
      var charge = [];
      if (u.charge_percent !== null) charge.push(el("meter", { min: 0, max: 100, low: 30, high: 70, optimum: 100, value: u.charge_percent }), " ");
      charge.push(el("span", { "class": "ups-charge" }, pct(u.charge_percent)));
      var comm = u.comm + (u.comm_error ? ": " + u.comm_error : "") + "; last seen " + clock(u.last_seen);
      return el("article", { "class": "card level-" + l, "data-ups": u.name },
        el("h3", null, u.name, u.model ? [" ", el("span", { "class": "model" }, u.model)] : null),
        el("p", { "class": "ups-status" }, el("span", { "class": "icon", "aria-hidden": "true" }, icon(l)), " ", el("span", { "class": "text" }, u.summary)),
        el("dl", null,
          el("div", null, el("dt", null, "Charge"), el("dd", null, charge)),
          el("div", null, el("dt", null, "Runtime"), el("dd", { "class": "ups-runtime" }, dur(u.runtime_s))),
          el("div", null, el("dt", null, "Load"), el("dd", { "class": "ups-load" }, pct(u.load_percent))),
          el("div", null, el("dt", null, "Status"), el("dd", null, el("code", { "class": "ups-tokens" }, u.status.length ? u.status.join(" ") : "none"))),
          el("div", null, el("dt", null, "Comm"), el("dd", { "class": "ups-comm" }, comm))),
        u.verdict ? el("p", { "class": "verdict" }, u.verdict) : null);
    }));
  }

  function decision(s) {
    var d = s.decision;
    var level = d.kind === "shutdown" ? "crit" : d.kind === "warn" ? "warn" : "ok";
    var node = document.getElementById("decision");
    node.className = "panel level-" + level;
    var parts = [el("h2", { id: "decision-h" }, "Decision"),
      el("p", { "class": "decision-kind" }, el("span", { "class": "badge" }, d.kind.toUpperCase()), " ",
        el("span", { "class": "supply" }, "supply " + d.supply + " of at least " + d.min_supplies))];
    if (d.eta_s !== null && d.kind !== "shutdown") {
      parts.push(el("p", { "class": "eta" }, "Shutdown in ", el("strong", null, dur(d.eta_s)),
        d.eta_if ? " if " + d.eta_if : "", d.eta_reason ? " — " + d.eta_reason : ""));
    }
    var reasons = d.reasons.length ? d.reasons.map(function (r) { return el("li", null, r); })
      : [el("li", { "class": "empty" }, "Nothing to report: every UPS supplies power.")];
    parts.push(el("ul", { "class": "reasons" }, reasons));
    if (s.restore) {
      parts.push(el("p", { "class": "restore" }, el("strong", null, "Restore due: "),
        s.restore.waiting ? "waiting — " + s.restore.waiting : (s.restore.auto ? "starting" : "run sundown restore")));
    }
    replace("decision", parts);
  }

  // timeline mirrors page.go's timelineOf; now is the status time moved on
  // by the time since it arrived, so running bars grow between events.
  function timeline(sh, now) {
    var t0 = ms(sh.started);
    sh.steps.forEach(function (st) { var a = ms(st.start); if (a && (!t0 || a < t0)) t0 = a; });
    var end = sh.ended ? ms(sh.ended) : now;
    var span = t0 ? Math.max((end - t0) / 1000, sh.estimate_s) : 0;
    sh.steps.forEach(function (st) { if (st.end) span = Math.max(span, (ms(st.end) - t0) / 1000); });
    span = Math.max(span, 1);
    var c = sh.counts;
    var title = runName(sh) + " " + sh.state + " — " +
      (c.done + c.failed + c.skipped) + " of " + sh.steps.length + " steps ended";
    var rows = sh.steps.map(function (st) {
      var track = svg("svg", { "class": "track", viewBox: "0 0 1000 10", preserveAspectRatio: "none", "aria-hidden": "true" });
      var timing = st.state === "pending" ? "not started" : "—";
      if (st.start) {
        var a = ms(st.start), b = st.end ? ms(st.end) : end;
        var x = (a - t0) / 1000 / span * 1000;
        var w = Math.min(Math.max((b - a) / 1000 / span * 1000, 4), 1000 - x);
        track.appendChild(svg("rect", { "class": "bar", x: x.toFixed(1), y: 0, width: w.toFixed(1), height: 10 }));
        var el_s = st.end ? st.elapsed_s : Math.max((end - a) / 1000, 0);
        timing = "+" + dur((a - t0) / 1000) + (el_s !== null && el_s !== undefined ? ", " + dur(el_s) : "");
      }
      return el("li", { "class": "step st-" + st.state, "data-step": st.key },
        el("span", { "class": "step-name" }, st.name, st.group ? [" ", el("span", { "class": "group" }, st.group)] : null,
          " ", el("span", { "class": "kind" }, st.kind)),
        el("span", { "class": "step-state" }, stepText(st)),
        track,
        el("span", { "class": "step-time" }, timing),
        st.error ? el("span", { "class": "step-error" }, st.error) : null);
    });
    return [el("h3", { "class": "run-title" }, title), el("ol", { "class": "timeline", "aria-label": "steps" }, rows),
      el("p", { "class": "scale" }, "scale: 0 to " + dur(span))];
  }

  function runName(sh) {
    var name = { shed: "Shed stage", drill: "Drill", restore: "Restore" }[sh.kind] || (sh.dry_run ? "Drill" : "Shutdown");
    return sh.dry_run ? name + " (dry run)" : name;
  }

  function plan(s, now) {
    var parts = [el("h2", { id: "plan-h" }, "Shutdown plan")];
    var p = s.plan;
    if (p) {
      parts.push(el("p", { "class": "plan-summary" }, p.steps + " steps, estimated ", el("strong", null, dur(p.makespan_s)),
        " (lower bound " + dur(p.lower_bound_s) + "), planned at ", el("time", { datetime: p.built }, clock(p.built))));
      if (p.targets && p.targets.length) parts.push(el("ul", { "class": "targets" }, p.targets.map(function (t) {
        return el("li", { "class": t.reachable ? "ok" : "down" }, t.name + ": " +
          (t.reachable ? "reachable, " + t.guests + " guests, " + t.hosts + " hosts" : "UNREACHABLE: " + t.error));
      })));
      if (p.problems.length) parts.push(el("ul", { "class": "problems" }, p.problems.map(function (x) { return el("li", null, x); })));
    } else {
      parts.push(el("p", { "class": "plan-summary empty" }, "No plan yet (no targets, or discovery has not finished)."));
    }
    if (s.shutdown) {
      parts.push(timeline(s.shutdown, now));
      if (s.shutdown.notes.length) parts.push(el("ul", { "class": "notes" }, s.shutdown.notes.map(function (x) { return el("li", null, x); })));
    }
    replace("plan", parts);
  }

  function channels(s) {
    if (!s.channels.length) { replace("channels", el("p", { "class": "empty" }, "No notification channels configured.")); return; }
    var head = el("thead", null, el("tr", null, ["Channel", "State", "Failed", "Pending", "Last error"].map(function (h) {
      return el("th", { scope: "col" }, h);
    })));
    var body = el("tbody", null, s.channels.map(function (c) {
      var err = c.last_error ? c.last_error + (c.last_error_at ? " (" + clock(c.last_error_at) + ")" : "") : "—";
      return el("tr", { "class": c.down ? "level-crit" : "level-ok", "data-channel": c.name },
        el("td", null, c.name),
        el("td", { "class": "ch-state" }, el("span", { "aria-hidden": "true" }, c.down ? "✕" : "✓"), c.down ? " down" : " up"),
        el("td", null, c.failed), el("td", null, c.pending), el("td", null, err));
    }));
    replace("channels", el("table", null, head, body));
  }

  function events(s) {
    if (!s.events.length) { replace("events", el("li", { "class": "empty" }, "No events yet.")); return; }
    replace("events", s.events.map(function (e) {
      return el("li", { "class": "level-" + eventLevel(e.type) },
        el("time", { datetime: e.at }, clock(e.at)), " ",
        el("span", { "class": "ev-type" }, e.type), " ",
        el("span", { "class": "ev-ups" }, e.ups), " ",
        el("span", { "class": "ev-msg" }, e.message));
    }));
  }

  var last = null, lastAt = 0;
  function render(s) {
    last = s; lastAt = Date.now();
    var now = ms(s.at);
    overall(s); upsCards(s); decision(s); plan(s, now); channels(s); events(s);
    var u = document.getElementById("updated");
    u.setAttribute("datetime", s.at);
    u.textContent = clock(s.at);
    document.body.setAttribute("data-updates", String(Number(document.body.getAttribute("data-updates") || "0") + 1));
  }

  function live(state, text) {
    var n = document.getElementById("live");
    n.className = "live " + state;
    n.textContent = text;
  }

  function start() {
    if (!window.EventSource) { live("", "static view (this browser has no EventSource)"); return; }
    var src = new EventSource("/api/v1/events");
    src.addEventListener("open", function () { live("on", "live"); });
    src.addEventListener("error", function () { live("lost", "reconnecting…"); });
    src.addEventListener("status", function (ev) {
      live("on", "live");
      try { render(JSON.parse(ev.data)); } catch (err) { live("lost", "bad update: " + err.message); }
    });
    // Running bars grow between updates.
    setInterval(function () {
      if (last && last.shutdown && last.shutdown.state === "running") plan(last, ms(last.at) + (Date.now() - lastAt));
    }, 1000);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
