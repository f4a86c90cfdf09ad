"""`dolphind backtest`: the live pipeline over history at full speed, then a report.

No second implementation of any stage: this builds a backtest config (replay at speed 0 with
no loop, the paper venue, everything written under ``--out``) and runs the same ``Daemon``
that `dolphind run` runs, which stops by itself when the replay is exhausted and every stage
has drained. The report is then written from the trade ledger, the equity curve and the
Arrow scan files of that run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from dolphind import logs
from dolphind.alpha.profile import config_from_dict, load_config, strategy_params, validate
from dolphind.app import build_daemon
from dolphind.config import Config, ConfigError
from dolphind.daemon import EXIT_CONFIG, EXIT_OK, Daemon, StartupError
from dolphind.feed.history import HistoryError
from dolphind.plugins import PluginError
from dolphind.alpha.params import effective_durations
from dolphind.report.explain import (Explanation, console_lines, explain_html, mc_statement,
                                     write_explain)
from dolphind.report import terminal
from dolphind.report.html import fmt
from dolphind.report.model import SignalSeries
from dolphind.report.progress import ProgressBar
from dolphind.report.writer import write_report
from dolphind.scan.arrow_sink import read_scans

log = structlog.get_logger("dolphind.backtest")

# What a previous backtest leaves in its --out folder (removed by --force, nothing else is).
_OUTPUTS = ("dolphind.sqlite", "dolphind.sqlite-wal", "dolphind.sqlite-shm", "audit.jsonl",
            "dolphind.lock", "summary.json", "trades.csv", "report.html", "scans", "plugins",
            "explain.json")


def backtest_config(base: Config, data: list[str], out: Path, start: str | None,
                    end: str | None, seed: int | None) -> Config:
    """``base`` turned into a backtest: same strategy, rails and friction; replay at speed 0."""
    replay = dataclasses.replace(
        base.replay, paths=tuple(str(Path(p).resolve()) for p in data) or tuple(
            str(base.resolve(p)) for p in base.replay.paths),
        speed=0.0, loop=False, start=start or base.replay.start, end=end or base.replay.end)
    execution = base.execution if seed is None else dataclasses.replace(base.execution, seed=seed)
    # Plugins act on wall-clock ticks (cooldowns, timers), so with them two runs over the same
    # data could differ: a backtest runs the strategy alone (run_backtest says so if any were on).
    plugins = dataclasses.replace(base.plugins, enabled=(), required=())
    return dataclasses.replace(
        base, mode="backtest", replay=replay, execution=execution, plugins=plugins,
        data=dataclasses.replace(base.data, dir=str(out.resolve())),
        ops=dataclasses.replace(base.ops, listen="127.0.0.1:0"),
        feed=dataclasses.replace(base.feed, kind="replay"))


def _prepare_out(out: Path, force: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    found = [name for name in _OUTPUTS if (out / name).exists()]
    if found and not force:
        raise StartupError(f"{out} holds a previous run ({', '.join(found)}); choose another "
                           "--out or pass --force to replace it")
    for name in found:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
    for png in out.glob("*.png"):
        png.unlink()


async def _watch_progress(daemon: Daemon) -> None:
    bar: ProgressBar | None = None

    def poll() -> None:
        nonlocal bar
        feed = getattr(daemon.pipeline, "feed", None)
        if feed is not None:
            st = feed.status()
            if bar is None:
                bar = ProgressBar(int(st["bars_total"]))
            bar.update(int(st["position"]))

    try:
        while True:
            poll()
            await asyncio.sleep(0.2)
    finally:
        # The last poll: the bar ends on where the feed ended (100% for a whole run), not on
        # the last 0.2 s tick before the pipeline finished.
        poll()
        if bar is not None:
            bar.close()


async def _run(daemon: Daemon) -> int:
    watcher = asyncio.create_task(_watch_progress(daemon))
    try:
        return await daemon.serve()
    finally:
        watcher.cancel()
        try:
            await watcher
        except asyncio.CancelledError:
            pass


def _signal_series(out: Path, threshold: float) -> SignalSeries | None:
    files = sorted((out / "scans").glob("*.arrow"))
    if not files:
        return None
    table = read_scans(files)
    ts = table.column("timestamp_ns").to_numpy()
    vd = table.column("vel_div").to_numpy(zero_copy_only=False).astype(np.float64)
    return SignalSeries(ts, vd, thresholds=(threshold,))


def run_backtest(data: list[str], out: str, config_path: str | None = None,
                 start: str | None = None, end: str | None = None, seed: int | None = None,
                 force: bool = False) -> int:
    """Run a backtest and write its report into ``out``; returns the exit code."""
    logs.configure(fmt="json" if not sys.stderr.isatty() else "console",
                   level="warning")
    out_dir = Path(out)
    try:
        base = load_config(config_path) if config_path else config_from_dict({})
        cfg = backtest_config(base, data, out_dir, start, end, seed)
        problems = validate(cfg)
        if problems:
            raise ConfigError(problems)
        _prepare_out(out_dir, force)
        threshold = strategy_params(base).vel_div_threshold
    except (ConfigError, StartupError) as exc:
        for line in str(exc).splitlines():
            print(f"dolphind backtest: {line}", file=sys.stderr)
        return EXIT_CONFIG
    if base.plugins.enabled:
        print(f"dolphind backtest: plugins are not run in a backtest (they act on wall-clock "
              f"time): {', '.join(base.plugins.enabled)}", file=sys.stderr)
    # The token would open control endpoints of a daemon that lives for the run only.
    os.environ.pop("DOLPHIND_OPS_TOKEN", None)
    daemon = build_daemon(cfg, exit_when_done=True, record_equity=True)
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        try:
            code = runner.run(_run(daemon))
        except (StartupError, PluginError, ConfigError, HistoryError, OSError) as exc:
            print(f"dolphind backtest: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    if code != EXIT_OK:
        print(f"dolphind backtest: the pipeline failed (exit {code}); see the log", file=sys.stderr)
        return code
    pipeline = daemon.pipeline
    ledger = pipeline.ledger
    feed_status: dict[str, Any] = pipeline.feed.status()
    run_info = {"data": [str(p) for p in cfg.replay.paths], "config_hash": base.hash or None,
                "params_hash": pipeline.status()["alpha"]["params_hash"],
                "profile": cfg.strategy.profile, "seed": cfg.execution.seed,
                "bars": feed_status["bars_emitted"], "symbols": feed_status["symbols"],
                "interval_s": feed_status["interval_s"], "start": cfg.replay.start or None,
                "end": cfg.replay.end or None, "data_notes": feed_status["notes"],
                "signals_by_outcome": _counter_by_label(daemon, "dolphind_signals_total"),
                "risk_rejections_by_rule": _counter_by_label(daemon,
                                                             "dolphind_risk_rejections_total")}
    # What the loader dropped, aligned or refused to guess is part of the answer: say it here,
    # not only in summary.json.
    for note in feed_status["notes"]:
        print(f"dolphind backtest: data: {note}", file=sys.stderr)
    why = _explanation(daemon, cfg, feed_status, run_info)
    run_info["bar_interval_s"] = why.bar_interval_s
    run_info["validation_bar_s"] = why.validation_bar_s
    run_info["effective_durations"] = {n: {"profile_s": s, "bars": b, "effective_s": eff}
                                       for n, s, b, eff in why.durations}
    run_info["mc_gate"] = mc_statement(why)
    if why.stale_positions:
        run_info["stale_positions_at_end"] = list(why.stale_positions)
    for line in console_lines(why):
        print(f"dolphind backtest: {line}", file=sys.stderr)
    files = write_report(out_dir, ledger.closed, ledger.equity,
                         initial_capital_usdt=cfg.execution.capital_usdt,
                         signal=_signal_series(out_dir, threshold), run=run_info,
                         extra_html=explain_html(why),
                         first_last_close=_first_last_closes(pipeline.feed, ledger.equity),
                         funding_paid_usdt=(None if why.funding_pnl_usdt is None
                                            else -why.funding_pnl_usdt))
    write_explain(out_dir, why)
    doc = json.loads(files.summary_json.read_text(encoding="utf-8"))
    print(terminal.render(doc))
    print()
    s = files.summary
    pf = "n/a" if s.profit_factor is None else fmt(s.profit_factor, "ratio")
    print(f"dolphind backtest: {feed_status['bars_emitted']} bars, {len(ledger.closed)} trades, "
          f"report in {out_dir / 'report.html'}")
    print(f"  ROI {_pct(s.roi)}  max drawdown {_pct(s.max_drawdown)}  "
          f"win rate {_pct(s.win_rate)}  profit factor {pf}")
    return EXIT_OK


def _explanation(daemon: Daemon, cfg: Config, feed_status: dict[str, Any],
                 run_info: dict[str, Any]) -> Explanation:
    """What the run recorded about its inputs and decisions (report/explain.py)."""
    profile = strategy_params(cfg)
    bar_s = float(feed_status["interval_s"])
    alpha = daemon.pipeline.alpha
    st = alpha.engine.status()
    venue = daemon.pipeline.venue
    return Explanation(
        bar_interval_s=bar_s, validation_bar_s=profile.validation_bar_s,
        durations=tuple((d.name, d.seconds, d.bars, d.effective_s)
                        for d in effective_durations(profile, bar_s)),
        gate_counts=run_info["signals_by_outcome"],
        rail_rejections=run_info["risk_rejections_by_rule"],
        rankings=list(alpha.entry_rankings), mc_source=st.mc_source, mc_status=st.mc_status,
        stale_positions=tuple(venue.stale_positions()),
        funding_pnl_usdt=_funding_pnl(daemon),
        intent_outcomes=_counter_by_label(daemon, "dolphind_execution_intents_total"),
        funding_payments=tuple(dataclasses.asdict(p) for p in venue.funding_payments))


def _funding_pnl(daemon: Daemon) -> float | None:
    """Funding received minus paid in the run (None: the data had no funding prints)."""
    feed, venue = daemon.pipeline.feed, daemon.pipeline.venue
    history = getattr(feed, "history", None)
    paid = venue.funding_paid_usdt  # None: the venue does not model funding
    if history is None or not history.funding or paid is None:
        return None
    return -float(paid)


def _first_last_closes(feed: Any, equity: list[Any]) -> dict[str, tuple[float, float]]:
    """Each symbol's first and last finite close over the bars the run replayed."""
    history = getattr(feed, "history", None)
    if history is None or not equity:
        return {}
    ts = history.ts_ns
    lo = int(np.searchsorted(ts, min(p.ts_ns for p in equity), side="left"))
    hi = int(np.searchsorted(ts, max(p.ts_ns for p in equity), side="right"))
    out: dict[str, tuple[float, float]] = {}
    for i, sym in enumerate(history.symbols):
        col = history.closes[lo:hi, i]
        finite = col[np.isfinite(col)]
        if finite.size:
            out[str(sym)] = (float(finite[0]), float(finite[-1]))
    return out


def _counter_by_label(daemon: Daemon, name: str) -> dict[str, int]:
    """A labelled counter's values, e.g. decisions by outcome (sorted for determinism)."""
    out: dict[str, int] = {}
    for family in daemon.metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name and sample.labels:
                out[next(iter(sample.labels.values()))] = int(sample.value)
    return dict(sorted(out.items()))


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"
