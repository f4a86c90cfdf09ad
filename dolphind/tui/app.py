"""`dolphind top`: the Command Center in a terminal.

The same panels as the web page (``ops/static``): the live strip, open positions, recent orders,
closed trades, vel_div (a sparkline against the threshold), scan and stage health, plugins and
the live feed of decisions, incidents and control actions. Read-only; q quits.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
from typing import Any, AsyncGenerator, Callable

from rich.text import Text
from textual.app import App, ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Header, RichLog, Sparkline, Static

from dolphind.tui.source import Event, bus_stream, stream

MAX_POINTS = 240


def _usd(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:,.{digits}f}"


def _signed(x: float | None) -> Text:
    if x is None:
        return Text("—")
    return Text(f"{x:+,.2f}", style="green" if x > 0 else "red" if x < 0 else "")


def _hhmmss(ts: float | None) -> str:
    if not ts:
        return "--:--:--"
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%H:%M:%S")


def strip_text(s: dict[str, Any]) -> Text:
    """The live strip as one line of styled text (mode, venue, ready, posture, money, halt)."""
    t = Text()

    def field(label: str, value: str, style: str = "bold") -> None:
        t.append(f"{label} ", style="dim")
        t.append(value, style=style)
        t.append("   ")

    venue = s["venue"] + (f" {s['network']}" if s.get("network") else "")
    field("mode", f"{s['mode']} ({s['feed_kind']})")
    field("venue", venue)
    field("ready", "READY" if s["ready"] else "NOT READY", "bold green" if s["ready"] else "bold red")
    field("can trade", "yes" if s["can_trade"] else "no", "green" if s["can_trade"] else "red")
    if s["halted"]:
        field("trading", "HALTED by " + ", ".join(s.get("halted_by") or {}), "bold white on red")
    else:
        field("trading", "ACTIVE", "bold green")
    t.append("\n")
    rm = "—" if s.get("rm") is None else f"{s['rm']:.3f}"
    field("posture", f"{s.get('posture') or '—'} Rm {rm}")
    field("equity", _usd(s.get("equity")))
    dd = s.get("drawdown")
    field("drawdown", "—" if dd is None else f"{100 * dd:.2f}%",
          "bold red" if (dd or 0) > 0.1 else "bold yellow" if (dd or 0) > 0.03 else "bold")
    field("exposure", _usd(s.get("exposure"), 0))
    for label, key in (("realised", "realised"), ("unrealised", "unrealised")):
        t.append(f"{label} ", style="dim")
        t.append_text(_signed(s.get(key)))
        t.append("   ")
    return t


def bus_text(values: dict[str, Any], error: str, cfg: Any) -> Text:
    """The daemon's own keys as the Hazelcast cluster has them (DOLPHIN_SAFETY, _STATE_BLUE,
    _META_HEALTH), from the entry listeners."""
    t = Text()
    t.append(f"state bus {cfg.cluster_name}{'/' + cfg.namespace if cfg.namespace else ''}  ",
             style="dim")
    if error:
        t.append(f"not connected: {error}", style="red")
        return t
    safety = values.get("DOLPHIN_SAFETY") or {}
    state = values.get("DOLPHIN_STATE_BLUE") or {}
    meta = values.get("DOLPHIN_META_HEALTH") or {}
    if not (safety or state or meta):
        t.append("no key yet", style="yellow")
        return t
    rm = safety.get("Rm")
    t.append(f"posture {safety.get('posture') or '—'} Rm {'—' if rm is None else f'{rm:.3f}'}  ")
    t.append("HALTED" if safety.get("halted") else "active",
             style="bold red" if safety.get("halted") else "green")
    cap, dd = state.get("capital"), state.get("drawdown")
    t.append(f"  capital {_usd(cap)}  drawdown {'—' if dd is None else f'{100 * dd:.2f}%'}"
             f"  trades {state.get('trades', '—')}  health {meta.get('status', '—')}")
    return t


def scan_text(s: dict[str, Any], points: int) -> Text:
    sc = s["scan"]
    vd = sc.get("vel_div")
    t = Text()
    t.append(f"scan {sc.get('scan_number', '—')}  symbols {sc.get('n_symbols') or '—'}  ")
    t.append("warm" if sc.get("warm") else "warming up", style="green" if sc.get("warm") else
             "yellow")
    t.append(f"  vel_div {'cold' if vd is None else f'{vd:+.5f}'}")
    t.append(f"  threshold {s.get('threshold')}  fallbacks {sc.get('fallbacks') or 0}"
             f"  ({points} scans shown)", style="dim")
    return t


class TopApp(App[None]):
    """Panels that redraw from each event of ``source`` (a function returning the stream)."""

    TITLE = "dolphind top"
    CSS = """
    Screen { layout: vertical; }
    #strip { height: 4; padding: 0 1; border: round $primary; }
    #bus { height: 1; padding: 0 2; }
    .row { height: 1fr; }
    .panel { width: 1fr; border: round $panel-lighten-2; }
    .panel > .title { color: $text-muted; text-style: bold; }
    #chart { height: 7; border: round $panel-lighten-2; padding: 0 1; }
    #vd { height: 3; }
    DataTable { height: 1fr; }
    RichLog { height: 1fr; }
    """
    BINDINGS = [("q", "quit", "quit")]

    def __init__(self, base_url: str,
                 source: Callable[[str], AsyncGenerator[Event, None]] = stream,
                 bus: Any = None,
                 bus_source: Callable[[Any], AsyncGenerator[Event, None]] = bus_stream) -> None:
        super().__init__()
        self.base_url = base_url
        self._source = source
        # [statebus] when it is Hazelcast: the bus line is fed by the cluster's entry listeners.
        self._bus, self._bus_source = bus, bus_source
        self.bus_values: dict[str, Any] = {}
        self.bus_error = ""
        self.snapshot: dict[str, Any] | None = None
        self.points: collections.deque[float] = collections.deque(maxlen=MAX_POINTS)
        self._last_scan: int | None = None
        self.events_seen = 0
        self.feed_lines: list[str] = []
        self.connected = False

    def compose(self) -> ComposeResult:
        yield Header(show_clock=True)
        yield Static("connecting…", id="strip")
        if self._bus is not None:
            yield Static("state bus: connecting…", id="bus")
        with Vertical(id="chart"):
            yield Static("vel_div", id="scan")
            yield Sparkline([], id="vd")
        with Horizontal(classes="row"):
            with Vertical(classes="panel"):
                yield Static("OPEN POSITIONS", classes="title")
                yield DataTable(id="positions", cursor_type="none", zebra_stripes=True)
            with Vertical(classes="panel"):
                yield Static("RECENT ORDERS", classes="title")
                yield DataTable(id="orders", cursor_type="none", zebra_stripes=True)
            with Vertical(classes="panel"):
                yield Static("CLOSED TRADES", classes="title")
                yield DataTable(id="trades", cursor_type="none", zebra_stripes=True)
        with Horizontal(classes="row"):
            with Vertical(classes="panel"):
                yield Static("STAGES & PLUGINS", classes="title")
                yield DataTable(id="stages", cursor_type="none")
            with Vertical(classes="panel"):
                yield Static("LIVE FEED  decisions · incidents · control", classes="title")
                yield RichLog(id="feed", max_lines=500, markup=False, wrap=False)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = self.base_url
        self.query_one("#positions", DataTable).add_columns(
            "symbol", "side", "qty", "entry", "mark", "notional", "uPnL")
        self.query_one("#orders", DataTable).add_columns(
            "symbol", "side", "qty", "state", "avg fill", "reason")
        self.query_one("#trades", DataTable).add_columns(
            "symbol", "side", "entry", "exit", "bars", "PnL", "exit")
        self.query_one("#stages", DataTable).add_columns("name", "state", "beat", "backlog",
                                                         "restarts")
        self.run_worker(self._consume(), name="stream")
        if self._bus is not None:
            self.run_worker(self._consume_bus(), name="bus")

    async def _consume(self) -> None:
        async for event in self._source(self.base_url):
            self.apply(event)

    async def _consume_bus(self) -> None:
        try:
            # aclosing: the client shuts down when the app quits (the worker is cancelled).
            async with contextlib.aclosing(self._bus_source(self._bus)) as events:
                async for event in events:
                    self.apply_bus(event)
        except Exception as exc:  # the bus line says why; the HTTP panels carry on
            self.apply_bus(Event("error", f"{type(exc).__name__}: {exc}"))

    def apply_bus(self, event: Event) -> None:
        if event.name == "error":
            self.bus_error = str(event.data)
        else:
            self.bus_error = ""
            self.bus_values[event.data["map"]] = event.data["value"]
        self.query_one("#bus", Static).update(bus_text(self.bus_values, self.bus_error,
                                                       self._bus))

    # ---- applying events -----------------------------------------------------------------

    def apply(self, event: Event) -> None:
        self.events_seen += 1
        if event.name == "error":
            self.connected = False
            self.query_one("#strip", Static).update(
                Text(f"not connected to {self.base_url}: {event.data} (retrying)", style="red"))
            return
        self.connected = True
        if event.name == "feed":
            self._feed(event.data)
            return
        data = event.data
        if event.name == "hello":
            self.points.clear()
            self._last_scan = None
        self._points(data.get("points", []))
        self._feed(data.get("feed", []))
        self._render(data["snapshot"])

    def _points(self, points: list[list[Any]]) -> None:
        for _ts, n, vd in points:
            if self._last_scan is not None and n <= self._last_scan:
                continue
            self._last_scan = n
            if vd is not None:
                self.points.append(vd)

    def _feed(self, items: list[dict[str, Any]]) -> None:
        log = self.query_one("#feed", RichLog)
        styles = {"decision": "cyan", "incident": "yellow", "control": "magenta", "trade": "green"}
        for it in items:
            kind = it["sub"] if it.get("sub") in ("entry", "exit") else it["kind"]
            style = "bold red" if it.get("sub") == "critical" else styles.get(it["kind"], "")
            line = Text()
            line.append(_hhmmss(it.get("ts")) + " ", style="dim")
            line.append(f"{kind.upper():<9}", style=style)
            line.append(it.get("text", ""))
            self.feed_lines.append(line.plain)
            log.write(line)

    def _render(self, s: dict[str, Any]) -> None:
        self.snapshot = s
        self.query_one("#strip", Static).update(strip_text(s))
        self.query_one("#scan", Static).update(scan_text(s, len(self.points)))
        self.query_one("#vd", Sparkline).data = list(self.points)

        pos = self.query_one("#positions", DataTable)
        pos.clear()
        for p in s["positions"]:
            pos.add_row(p["symbol"], Text(p["side"], style="green" if p["side"] == "LONG"
                                          else "red"),
                        f"{abs(p['qty']):.4g}", f"{p['avg_price']:.6g}",
                        f"{p['mark']:.6g}" if p.get("mark") else "—",
                        _usd(p.get("notional_usdt"), 0), _signed(p.get("unrealised_pnl_usdt")))
        orders = self.query_one("#orders", DataTable)
        orders.clear()
        for o in s["orders"]:
            state = Text(o["state"], style="green" if o["state"] == "filled" else
                         "red" if o["state"] == "rejected" else "")
            reason = o.get("reject_reason") if o["state"] == "rejected" and o.get(
                "reject_reason") else ("exit · " if o.get("reduce_only") else "") + o["reason"]
            orders.add_row(o["symbol"], o["side"], f"{o['qty']:.4g}", state,
                           f"{o['avg_fill_price']:.6g}" if o.get("avg_fill_price") else "—",
                           reason)
        trades = self.query_one("#trades", DataTable)
        trades.clear()
        for t in s["trades"]:
            trades.add_row(t["symbol"], t["side"], f"{t['entry_price']:.6g}",
                           f"{t['exit_price']:.6g}", str(t["bars_held"]), _signed(t["pnl_usdt"]),
                           t["exit_reason"])
        stages = self.query_one("#stages", DataTable)
        stages.clear()
        for name, st in s["stages"].items():
            ok = st.get("running") and not st.get("stalled")
            stage_state = "stalled" if st.get("stalled") else "running" if st.get("running") \
                else "finished" if st.get("finished") else "DOWN"
            age = st.get("last_beat_age_s")
            stages.add_row(name, Text(stage_state, style="green" if ok else "red"),
                           "—" if age is None else f"{age:.1f}s", str(st.get("backlog", "")),
                           str(st.get("restarts", 0)))
        for p in s["plugins"]:
            health = "disabled" if not p["enabled"] else "healthy" if p["healthy"] else "failing"
            stages.add_row(f"plugin {p['name']}", Text(health, style="green" if p["healthy"]
                                                       else "red"),
                           "", "", f"{p['failures_total']} fail")
