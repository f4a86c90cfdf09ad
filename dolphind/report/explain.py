"""Why the backtest did what it did: the report's "explained decisions" part (issue 16).

The summary tables say *what* happened; this says *why*, from what the run recorded:

- the profile's durations (defined in seconds) as this run's bar interval applies them, and a
  plain statement when that interval is not the one the profile was validated on;
- the gate counts: for every bar, the outcome the strategy reached (``no_signal``,
  ``irp_no_match``, ``thin_universe``, ``entered`` ...) and what the rails refused;
- per entry, the IRP candidate ranking: the top assets by ARS and the gate that excluded each
  (the chosen one has none);
- the MC gate's source (a model, or the no-model fallback at half size);
- funding paid / received and positions still open on a stale price at the end.

Everything here is derived from the run alone (no wall clock), so two identical runs write
identical ``explain.json`` files. ``explain_html`` is a fragment the report page appends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any, Mapping, Sequence

from dolphind.report import jsonfmt

EXPLAIN_JSON = "explain.json"
FUNDING_NOTE = ("settled at each funding time on open positions: in the wallet, the equity "
                "curve and ROI; not in the trades' PnL")
# How many entries' rankings the HTML page lists (explain.json keeps every one).
HTML_RANKINGS = 50


@dataclass(frozen=True, slots=True)
class Explanation:
    bar_interval_s: float
    validation_bar_s: float
    # (name, seconds in the profile, bars in this run, seconds those bars span)
    durations: tuple[tuple[str, float, int, float], ...]
    gate_counts: Mapping[str, int]
    rail_rejections: Mapping[str, int]
    rankings: Sequence[Mapping[str, Any]]
    mc_source: str
    mc_status: str
    funding_pnl_usdt: float | None = None
    stale_positions: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())
    # Every funding settlement on an open position: {ts_ns, symbol, qty, mark, rate, amount}.
    funding_payments: tuple[Mapping[str, Any], ...] = ()
    # What the execution stage did with each intent (accepted, rejected by rule, vetoed, ...).
    intent_outcomes: Mapping[str, int] = field(default_factory=dict)

    @property
    def interval_differs(self) -> bool:
        return self.bar_interval_s != self.validation_bar_s

    @property
    def mc_fallback(self) -> bool:
        return self.mc_source == "FALLBACK_NO_MODEL"


def interval_statement(e: Explanation) -> str | None:
    """One line saying the run's bars are not the profile's, with the effective durations."""
    if not e.interval_differs:
        return None
    parts = ", ".join(f"{name} {secs:g} s -> {bars} bar{'s' if bars != 1 else ''} "
                      f"({eff:g} s)" for name, secs, bars, eff in e.durations)
    return (f"bar interval {e.bar_interval_s:g} s differs from the profile's validation "
            f"interval {e.validation_bar_s:g} s; effective durations: {parts}")


def mc_statement(e: Explanation) -> str:
    if e.mc_fallback:
        return ("MC gate: no model installed: fallback ORANGE, every entry sized at half "
                "(SPEC §3)")
    return f"MC gate: {e.mc_status} from {e.mc_source}"


def console_lines(e: Explanation) -> list[str]:
    """What the backtest prints about its inputs (stderr), besides the headline numbers."""
    lines = [s for s in (interval_statement(e),) if s]
    lines.append(mc_statement(e))
    stopped = {k: v for k, v in e.gate_counts.items() if k not in ("entered",)}
    if stopped:
        top = sorted(stopped.items(), key=lambda kv: (-kv[1], kv[0]))[:6]
        lines.append("bars by outcome: " + ", ".join(f"{k} {v}" for k, v in top)
                     + f"; entered {e.gate_counts.get('entered', 0)}")
    if e.intent_outcomes:
        lines.append("intents: " + ", ".join(f"{k} {v}" for k, v in
                                             sorted(e.intent_outcomes.items())))
    if e.funding_pnl_usdt is not None:
        lines.append(f"funding PnL {e.funding_pnl_usdt + 0.0:+.4f} USDT over "
                     f"{len(e.funding_payments)} settlements ({FUNDING_NOTE})")
    if e.stale_positions:
        lines.append("positions open on a stale price at the end: "
                     + ", ".join(e.stale_positions))
    return lines


def explain_document(e: Explanation) -> dict[str, Any]:
    return {
        "bar_interval_s": e.bar_interval_s,
        "validation_bar_s": e.validation_bar_s,
        "interval_differs": e.interval_differs,
        "interval_statement": interval_statement(e),
        "effective_durations": [
            {"name": n, "profile_s": s, "bars": b, "effective_s": eff}
            for n, s, b, eff in e.durations],
        "gate_counts": dict(sorted(e.gate_counts.items())),
        "rail_rejections": dict(sorted(e.rail_rejections.items())),
        "intent_outcomes": dict(sorted(e.intent_outcomes.items())),
        "mc_gate": {"source": e.mc_source, "status": e.mc_status, "fallback": e.mc_fallback,
                    "statement": mc_statement(e)},
        "funding_pnl_usdt": e.funding_pnl_usdt,
        "funding_note": FUNDING_NOTE if e.funding_pnl_usdt is not None else None,
        "funding_payments": list(e.funding_payments),
        "stale_positions_at_end": list(e.stale_positions),
        "entry_rankings": list(e.rankings),
        "notes": list(e.notes),
    }


def write_explain(out_dir: str | Path, e: Explanation) -> Path:
    path = Path(out_dir) / EXPLAIN_JSON
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(jsonfmt.dumps(jsonfmt.to_jsonable(explain_document(e))), encoding="utf-8",
                   newline="")
    tmp.replace(path)
    return path


def explain_html(e: Explanation) -> str:
    """The page's "Why" section (a fragment appended to report.html)."""
    out = ['<h2 id="why">Why: inputs, gates and asset choice</h2><table>']
    out.append(f"<tr><td>bar interval</td><td>{e.bar_interval_s:g} s (profile validated on "
               f"{e.validation_bar_s:g} s)</td></tr>")
    stmt = interval_statement(e)
    if stmt:
        out.append(f'<tr><td>warning</td><td class="neg">{escape(stmt)}</td></tr>')
    out.append(f"<tr><td>MC gate</td><td>{escape(mc_statement(e))}</td></tr>")
    funding = ("no funding data in the replay" if e.funding_pnl_usdt is None else
               f"{e.funding_pnl_usdt + 0.0:+.4f} USDT over {len(e.funding_payments)} settlements "
               f"({FUNDING_NOTE})")
    out.append(f"<tr><td>funding PnL</td><td>{funding}</td></tr>")
    if e.stale_positions:
        out.append("<tr><td>open on a stale price at the end</td><td>"
                   f"{escape(', '.join(e.stale_positions))}</td></tr>")
    out.append("</table>")
    out.append("<h3>Effective durations</h3><table><tr><th>Duration</th><th>Profile (s)</th>"
               "<th>Bars in this run</th><th>Effective (s)</th></tr>")
    out += [f"<tr><td>{escape(n)}</td><td>{s:g}</td><td>{b}</td><td>{eff:g}</td></tr>"
            for n, s, b, eff in e.durations]
    out.append("</table>")
    out.append("<h3>Gate counts (bars by the strategy's outcome)</h3><table>"
               "<tr><th>Outcome</th><th>Bars</th></tr>")
    out += [f"<tr><td>{escape(k)}</td><td>{v}</td></tr>"
            for k, v in sorted(e.gate_counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    out.append("</table>")
    if e.intent_outcomes:
        out.append("<h3>What became of each intent</h3><table><tr><th>Outcome</th>"
                   "<th>Intents</th></tr>")
        out += [f"<tr><td>{escape(k)}</td><td>{v}</td></tr>"
                for k, v in sorted(e.intent_outcomes.items())]
        out.append("</table>")
    if e.rail_rejections:
        out.append("<h3>Risk rail rejections</h3><table><tr><th>Rule</th><th>Orders</th></tr>")
        out += [f"<tr><td>{escape(k)}</td><td>{v}</td></tr>"
                for k, v in sorted(e.rail_rejections.items())]
        out.append("</table>")
    out.append(f"<h3>Candidate rankings per entry (first {HTML_RANKINGS}; all in "
               f"{EXPLAIN_JSON})</h3><table><tr><th>Entry</th><th>Chosen</th>"
               "<th>Candidates (ARS, excluded by)</th></tr>")
    for r in list(e.rankings)[:HTML_RANKINGS]:
        cands = "; ".join(
            f"{c['symbol']} {c['ars']:.4g} ({c['excluded_by'] or 'chosen'})"
            for c in r["candidates"])
        out.append(f"<tr><td>{escape(str(r['intent_id']))}</td><td>{escape(r['symbol'])}</td>"
                   f"<td>{escape(cands)}</td></tr>")
    out.append("</table>")
    return "".join(out)
