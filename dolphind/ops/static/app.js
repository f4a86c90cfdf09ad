// dolphind Command Center. Plain JS, no build step: the daemon serves this file as it is.
// Data: one SSE stream (/ui/events): "hello" (everything), "tick" (twice a second), "feed"
// (control actions, pushed at once). Controls post to the ops API's token-protected /kill and
// /flatten; the token stays in this tab's memory.
"use strict";

const $ = (id) => document.getElementById(id);
const MAX_POINTS = 720, MAX_FEED = 200;
// pts: [scan number, market time (s), vel_div] in scan order; entries: scan numbers entered.
const state = { snapshot: null, pts: [], entries: new Set(), ticks: 0 };
window.commandCenter = state; // for the browser test and the curious operator

// ---- formatting ---------------------------------------------------------------------------
const usd = (x, d = 2) => x == null ? "—" : x.toLocaleString("en-US",
  { minimumFractionDigits: d, maximumFractionDigits: d });
const pct = (x, d = 2) => x == null ? "—" : (100 * x).toFixed(d) + "%";
const signed = (x, d = 2) => x == null ? "—" : (x > 0 ? "+" : "") + usd(x, d);
const qty = (x) => x == null ? "—" : Math.abs(x) >= 100 ? x.toFixed(1) : x.toPrecision(4);
const px = (x) => x == null ? "—" : x >= 100 ? x.toFixed(2) : x.toPrecision(5);
const hhmmss = (s) => s ? new Date(s * 1000).toISOString().slice(11, 19) : "";
const cls = (x) => x == null || x === 0 ? "" : x > 0 ? "good" : "bad";

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null) continue;
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}
function set(id, text, klass) {
  const e = $(id);
  e.textContent = text;
  if (klass !== undefined) e.className = klass;
}
function rows(tbody, items, cols, emptyText) {
  const body = $(tbody);
  body.replaceChildren(...(items.length ? items.map((it) => el("tr", {}, ...cols(it)))
    : [el("tr", {}, el("td", { class: "empty", colspan: "9" }, emptyText))]));
}
const td = (text, klass) => el("td", { class: klass }, text);

// ---- the strip and the tables ---------------------------------------------------------------
function render(s) {
  state.snapshot = s;
  set("s-mode", s.mode);
  set("s-feed", "feed: " + s.feed_kind);
  set("s-venue", s.venue);
  set("s-network", s.network ? s.network : s.venue === "paper" ? "simulated fills" : "");
  set("s-ready", s.ready ? "READY" : "NOT READY", s.ready ? "good" : "bad");
  const why = Object.entries(s.readiness || {}).filter(([, v]) => v !== "ok")
    .map(([k, v]) => `${k}: ${v}`).join("; ");
  set("s-cantrade", s.can_trade ? "can trade" : (why || "cannot trade"));
  set("s-posture", s.posture || "—", s.posture === "APEX" ? "good"
    : s.posture === "HIBERNATE" ? "bad" : s.posture ? "warn" : "");
  set("s-rm", "Rm " + (s.rm == null ? "—" : s.rm.toFixed(3))
    + (s.risk_multiplier < 1 ? ` · x${s.risk_multiplier}` : ""));
  set("s-equity", usd(s.equity));
  set("s-pnl", `real ${signed(s.realised)} · unreal ${signed(s.unrealised)}`);
  set("s-drawdown", pct(s.drawdown), s.drawdown > 0.1 ? "bad" : s.drawdown > 0.03 ? "warn" : "");
  set("s-peak", "peak " + usd(s.peak_equity));
  set("s-exposure", usd(s.exposure, 0));
  set("s-npos", `${s.positions.length} open · ${s.working_orders.length} working`);
  const halted = s.halted;
  set("s-trading", halted ? "HALTED" : "ACTIVE", halted ? "bad" : "good");
  set("s-haltedby", halted ? "by " + Object.keys(s.halted_by || {}).join(", ")
    + (s.halt_reason ? ` — ${s.halt_reason}` : "") : "no halt in force");
  $("t-trading").classList.toggle("halted", halted);

  rows("positions", s.positions, (p) => [td(p.symbol), td(p.side, p.side === "LONG" ? "good" : "bad"),
    td(qty(Math.abs(p.qty)), "r"), td(px(p.avg_price), "r"), td(px(p.mark), "r"),
    td(usd(p.notional_usdt, 0), "r"), td(signed(p.unrealised_pnl_usdt), "r " + cls(p.unrealised_pnl_usdt))],
  "flat: no open position");
  rows("orders", s.orders, (o) => [td(o.symbol), td(o.side), td(qty(o.qty), "r"),
    td(o.state, o.state === "filled" ? "good" : o.state === "rejected" ? "bad" : ""),
    td(o.avg_fill_price ? px(o.avg_fill_price) : "—", "r"),
    td(o.state === "rejected" && o.reject_reason ? o.reject_reason
      : (o.reduce_only ? "exit · " : "") + (o.reason || ""), o.state === "rejected" ? "dim" : "")],
  "no order yet");
  rows("trades", s.trades, (t) => [td(t.symbol), td(t.side), td(px(t.entry_price), "r"),
    td(px(t.exit_price), "r"), td(t.bars_held, "r"), td(signed(t.pnl_usdt), "r " + cls(t.pnl_usdt)),
    td(t.exit_reason)], "no closed trade yet");

  const sc = s.scan;
  const kv = [["scans", sc.scans], ["latest scan", sc.scan_number ?? "—"],
    ["symbols", sc.n_symbols ?? "—"], ["warm", sc.warm ? "yes" : "no (warming up)"],
    ["windows warm", (sc.windows_warm || []).join(", ") || "none"],
    ["vel_div", sc.vel_div == null ? "cold" : sc.vel_div.toFixed(5)],
    ["threshold", s.threshold ?? "—"], ["solver fallbacks", sc.fallbacks ?? 0],
    ["bar time", sc.timestamp_ns ? new Date(sc.timestamp_ns / 1e6).toISOString()
      .replace("T", " ").slice(0, 19) : "—"], ["decisions", s.decisions ?? 0]];
  $("scan").replaceChildren(...kv.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));

  $("health").textContent = s.health ? `${s.health.level} · ${s.health.score}` : "";
  rows("stages", Object.entries(s.stages), ([name, st]) => {
    const stateText = st.running ? (st.stalled ? "STALLED" : "running")
      : st.finished ? "finished" : "DOWN";
    return [td(name), td(stateText, st.running && !st.stalled ? "good" : st.finished ? "" : "bad"),
      td(st.last_beat_age_s == null ? "—" : st.last_beat_age_s.toFixed(1) + "s", "r"),
      td(st.backlog, "r"), td(st.restarts, "r " + (st.restarts ? "warn" : ""))];
  }, "no stage yet");
  rows("plugins", s.plugins, (p) => [td(p.name), td(p.version),
    td(!p.enabled ? "DISABLED" : p.healthy ? "healthy" : "failing",
      !p.enabled ? "bad" : p.healthy ? "good" : "warn"),
    td(p.failures_total, "r")], "no plugin loaded");
  $("footer").textContent = `dolphind ${s.version || ""} · updated ${new Date(s.ts * 1000)
    .toISOString().slice(11, 19)} UTC · breaker ${["closed", "half-open", "open"][s.venue_breaker] ?? "—"}`
    + ` · audit backlog ${s.audit_backlog ?? "—"}`;
}

// ---- the vel_div chart ------------------------------------------------------------------------
let plot = null;
function chartData() {
  const thr = state.snapshot ? state.snapshot.threshold : null;
  const p = state.pts;
  return [p.map((q) => q[1]), p.map((q) => q[2]), p.map(() => thr),
    p.map((q) => state.entries.has(q[0]) ? q[2] : null)];
}
function makeChart() {
  const box = $("chart");
  const axis = { stroke: "#8b949e", grid: { stroke: "#21262d" }, ticks: { stroke: "#21262d" } };
  plot = new uPlot({
    width: box.clientWidth, height: 240,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"), // market time, in UTC
    scales: { x: { time: true } },
    axes: [{ ...axis, values: [ // 24-hour UTC labels; the date when the day changes
      [86400, "{YYYY}-{MM}-{DD}", null, null, null, null, null, null, 1],
      [60, "{HH}:{mm}", "\n{YYYY}-{MM}-{DD}", null, "\n{MM}-{DD}", null, null, null, 1],
      [1, "{HH}:{mm}:{ss}", "\n{YYYY}-{MM}-{DD}", null, "\n{MM}-{DD}", null, null, null, 1]] },
    { ...axis, size: 60 }],
    series: [{}, { label: "vel_div", stroke: "#58a6ff", width: 1.5, points: { show: false },
      spanGaps: true },
      { label: "threshold", stroke: "#d29922", dash: [6, 4], width: 1, points: { show: false } },
      { label: "entry", stroke: "#3fb950", fill: "#3fb950", width: 0,
        paths: () => null, points: { show: true, size: 9 } }],
    legend: { live: false },
  }, chartData(), box);
  new ResizeObserver(() => plot.setSize({ width: box.clientWidth, height: 240 })).observe(box);
}
// sampled: a scan the page saw on a tick; otherwise an entry's own scan and vel_div (the ticks
// sample the scans at replay speed, so an entry's spike may fall between two samples).
function addPoint(n, t, v, sampled) {
  const p = state.pts;
  if (!sampled && (!p.length || n < p[0][0])) return; // before the chart's first scan
  let i = p.length;
  while (i > 0 && p[i - 1][0] > n) i--;
  if (i > 0 && p[i - 1][0] === n) { p[i - 1][3] = p[i - 1][3] || sampled; return; }
  p.splice(i, 0, [n, t, v, sampled]);
}
function addPoints(points) {
  for (const [t, n, v] of points) {
    const last = state.pts.length ? state.pts[state.pts.length - 1][0] : -1;
    // The daemon restarted with fresh scan numbers: start a fresh line, not a zig-zag.
    if (n < last - MAX_POINTS) { state.pts = []; }
    addPoint(n, t, v, true);
  }
  if (state.pts.length > MAX_POINTS) state.pts.splice(0, state.pts.length - MAX_POINTS);
  $("chart-note").textContent = state.pts.length
    ? `scans ${state.pts[0][0]}–${state.pts[state.pts.length - 1][0]} · ● entries` : "";
  if (plot) plot.setData(chartData());
}

// ---- the live feed ------------------------------------------------------------------------------
function addFeed(items, fresh) {
  const list = $("feed");
  for (const it of items) {
    if (it.kind === "decision" && it.sub === "entry" && it.scan != null) {
      state.entries.add(it.scan);
      addPoint(it.scan, it.ts, it.vel_div, false);
    }
    const li = el("li", { class: (fresh ? "new " : "") + (it.sub || ""), "data-kind": it.kind },
      el("time", {}, hhmmss(it.ts)), el("span", { class: "k " + it.kind }, it.sub === "entry"
        || it.sub === "exit" ? it.sub : it.kind), el("span", {}, it.text));
    list.prepend(li);
  }
  while (list.children.length > MAX_FEED) list.lastChild.remove();
  if (plot && items.length) plot.setData(chartData());
}

// ---- controls --------------------------------------------------------------------------------------
let toastTimer = null;
function toast(text, ok) {
  const t = $("toast");
  t.textContent = text; t.className = "toast " + (ok ? "ok" : "err"); t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, 5000);
}
async function control(path, body, label) {
  const token = $("token").value;
  const headers = { "Content-Type": "application/json" };
  if (token) headers["X-Dolphind-Token"] = token;
  try {
    const resp = await fetch(path, { method: "POST", headers, body: JSON.stringify(body) });
    const data = await resp.json().catch(() => ({}));
    if (resp.ok) toast(`${label}: done`, true);
    else toast(`${label} refused (${resp.status}): ${data.error || resp.statusText}`, false);
  } catch (e) {
    toast(`${label} failed: ${e}`, false);
  }
}
$("token").addEventListener("input", () => {
  const rw = $("token").value.length > 0;
  const b = $("access");
  b.textContent = rw ? "token set" : "read-only"; b.className = "badge " + (rw ? "rw" : "ro");
});
$("btn-halt").onclick = () => control("/kill", { action: "halt", reason: "operator (Command Center)" }, "halt");
$("btn-resume").onclick = () => control("/kill", { action: "resume" }, "resume");
$("btn-flatten").onclick = () => {
  if (confirm("Close every open position with reduce-only orders and halt new entries?")) {
    control("/flatten", { halt: true, reason: "operator (Command Center)" }, "flatten");
  }
};

// ---- the stream --------------------------------------------------------------------------------
function connect() {
  const es = new EventSource("/ui/events");
  const conn = $("conn");
  es.onopen = () => { conn.textContent = "live"; conn.className = "conn on"; };
  es.onerror = () => { conn.textContent = "reconnecting…"; conn.className = "conn off"; };
  es.addEventListener("hello", (e) => {
    const d = JSON.parse(e.data);
    state.pts = []; state.entries.clear();
    $("feed").replaceChildren();
    render(d.snapshot);
    addPoints(d.points);
    addFeed(d.feed, false);
    if (!plot) makeChart(); else plot.setData(chartData());
  });
  es.addEventListener("tick", (e) => {
    const d = JSON.parse(e.data);
    state.ticks += 1;
    render(d.snapshot);
    addPoints(d.points);
    addFeed(d.feed, true);
  });
  es.addEventListener("feed", (e) => addFeed(JSON.parse(e.data), true));
}
connect();
