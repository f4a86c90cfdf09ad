"""The governor plugin: veto before the order, check after the fill, halt on a breach.

A breach (an account past a limit, not an order that was stopped in time) halts trading with
cause ``governor``, raises a critical incident, is written to ``compliance.jsonl`` and is
persisted in ``governor_state.json``: after a restart the governor halts again at start. Only
an operator lifts it: the control plane's ``resume`` from the token-protected ops API
(cause ``http:...``). A resume from anyone else is answered by halting again.

The operator's resume acknowledges the breach and re-arms each breached rule from the state
at that moment, so the governor does not halt again on the very breach the operator has just
looked at (no halt/resume fight): drawdown is measured from the equity at the resume (and its
peak since), the daily loss from the equity at the resume (until the next UTC day), and a
position / leverage / symbol limit stays acknowledged while the account is still past it and
re-arms as soon as it is back within. The re-arm is in ``compliance.jsonl`` (the ``resumed``
line) and in the audit log (an ``governor_rearmed`` info incident).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import time
from pathlib import Path
from typing import Any, Mapping

from prometheus_client import Counter, Gauge

from dolphind.plugins import API_VERSION, ControlAction, Fill, OrderCheckView, PluginContext, Tick
from dolphind.plugins.files import append_jsonl, read_json, write_json_atomic
from dolphind_governor.policy import RULES, Account, Breach, check_account, check_order
from dolphind_governor.settings import GovernorSettings, load_settings

# The one place the version is written (pyproject reads it from here).
VERSION = "1.0.0"

CAUSE = "governor"
STATE_FILE = "governor_state.json"
COMPLIANCE_FILE = "compliance.jsonl"
STATE_VERSION = 1
# The token-protected ops API records its actions with this cause prefix.
OPERATOR_CAUSE_PREFIX = "http:"


def utc_day(wall: float) -> str:
    return dt.datetime.fromtimestamp(wall, dt.timezone.utc).strftime("%Y-%m-%d")


class GovernorPlugin:
    API_VERSION = API_VERSION
    name = "governor"
    version = VERSION

    def __init__(self) -> None:
        self.settings = GovernorSettings()
        self._ctx: Any = None
        self._dir: Path | None = None
        self.halted = False
        self.halt_reason = ""
        self.halted_at: float | None = None
        self.breached_rules: set[str] = set()
        # Rules an operator's resume acknowledged while still breached: not halted on again
        # until the account is back within them (then they re-arm).
        self.acknowledged: set[str] = set()
        # Peak equity since the last resume that acknowledged a drawdown (None: use the
        # execution stage's drawdown from its all-time peak).
        self.drawdown_peak: float | None = None
        self.day: str | None = None
        self.day_start_equity: float | None = None
        self.account = Account()
        # Lines for compliance.jsonl not yet written (veto() is synchronous: no I/O there).
        self._pending: collections.deque[dict[str, Any]] = collections.deque(maxlen=10_000)
        self._state_dirty = False

    # ---- lifecycle ---------------------------------------------------------------------

    def validate(self, settings: Mapping[str, Any]) -> list[str]:
        return load_settings(settings)[1]

    async def start(self, ctx: PluginContext) -> None:
        settings, problems = load_settings(ctx.settings)
        if problems:
            raise ValueError("; ".join(problems))
        self.settings, self._ctx = settings, ctx
        self._dir = Path(ctx.data_dir)
        reg = ctx.metrics_registry
        self._m_vetoes = Counter("dolphind_m25_vetoes_total",
                                 "Orders the governor refused before they were sent, by rule.",
                                 ["rule"], registry=reg)
        self._m_breaches = Counter("dolphind_m25_violations_total",
                                   "Policy breaches found on fills or account checks, by rule.",
                                   ["rule"], registry=reg)
        self._m_halted = Gauge("dolphind_m25_halted",
                               "1 while a governor halt is in force (until an operator resumes).",
                               registry=reg)
        for r in RULES:
            self._m_vetoes.labels(r)
            self._m_breaches.labels(r)
        await asyncio.to_thread(self._dir.mkdir, parents=True, exist_ok=True)
        self._restore(await asyncio.to_thread(read_json, self._dir / STATE_FILE))
        if self.halted:
            # A breach was found before the restart and no operator has resumed since.
            reason = f"{self.halt_reason} (persisted; resume with POST /kill)"
            ctx.control.halt(CAUSE, reason)
            ctx.control.raise_incident(CAUSE, "governor_halt", f"still halted after restart: "
                                       f"{self.halt_reason}", severity="critical")
            self._m_halted.set(1)
            self._log_line({"event": "halt_restored", "reason": self.halt_reason})
            await self._flush()
        ctx.log.info("governor.started", halted=self.halted, **dataclasses.asdict(settings))

    async def reload(self, settings: Mapping[str, Any]) -> None:
        new, problems = load_settings(settings)
        if problems:
            raise ValueError("; ".join(problems))
        self.settings = new
        self._ctx.log.info("governor.reloaded", **dataclasses.asdict(new))

    async def stop(self) -> None:
        if self._dir is not None:
            await self._flush(force_state=True)

    @property
    def tick_interval_s(self) -> float:
        return self.settings.tick_interval_s

    # ---- pre-trade ---------------------------------------------------------------------

    def veto(self, order: OrderCheckView) -> str | None:
        """The synchronous pre-trade hook: a reason to refuse ``order``, or None. In-memory
        only (it runs inside the rails' time budget)."""
        if getattr(order, "reduce_only", False):
            return None
        if self.halted:
            return f"governor halt in force: {self.halt_reason}"
        breach = check_order(order, self.account, self.settings)
        if breach is None:
            return None
        self._m_vetoes.labels(breach.rule).inc()
        self._log_line({"event": "veto", "rule": breach.rule, "message": breach.message,
                        "symbol": order.symbol, "notional_usdt": order.notional_usdt,
                        "client_id": getattr(order, "client_id", "")})
        return f"{breach.rule}: {breach.message}"

    # ---- post-trade --------------------------------------------------------------------

    async def on_fill(self, fill: Fill) -> None:
        """Book the fill into the governor's view at once, then check the account."""
        signed = fill.qty * fill.price * (1.0 if fill.side == "BUY" else -1.0)
        positions = dict(self.account.positions_usdt)
        positions[fill.symbol] = positions.get(fill.symbol, 0.0) + signed
        # Until the next tick re-reads the execution stage's figures, this is the best view.
        self.account = dataclasses.replace(
            self.account, positions_usdt=positions,
            gross_exposure_usdt=sum(abs(v) for v in positions.values()))
        await self._check()

    async def on_tick(self, tick: Tick) -> None:
        self._refresh(tick.wall)
        await self._check()

    async def on_control(self, action: ControlAction) -> None:
        if action.action != "resume" or not self.halted:
            return
        if action.cause.startswith(OPERATOR_CAUSE_PREFIX):
            rearm = self._rearm(action.ts)
            self._ctx.log.warning("governor.resumed_by_operator", cause=action.cause,
                                  reason=self.halt_reason, **rearm)
            self._log_line({"event": "resumed", "by": action.cause, "reason": self.halt_reason,
                            **rearm})
            self._ctx.control.raise_incident(
                CAUSE, "governor_rearmed",
                f"operator resume acknowledged {', '.join(rearm['acknowledged']) or 'nothing'}; "
                f"rules re-armed from the account at the resume", severity="info", **rearm)
            self.halted, self.halt_reason, self.halted_at = False, "", None
            self.breached_rules.clear()
            self._m_halted.set(0)
            self._state_dirty = True
            await self._flush()
        else:
            # Only a human lifts a governor halt; put it back.
            self._log_line({"event": "resume_refused", "by": action.cause})
            self._ctx.control.halt(CAUSE, f"{self.halt_reason} (only an operator may resume)")

    # ---- the work ----------------------------------------------------------------------

    def _rearm(self, wall: float) -> dict[str, Any]:
        """Acknowledge what is breached now and move the baselines to the account as it is."""
        self._refresh(wall)
        eq = self.account.equity_usdt
        still = {b.rule for b in check_account(self.account, self.settings)}
        self.acknowledged = still - {"max_drawdown", "max_daily_loss"}
        out: dict[str, Any] = {"acknowledged": sorted(still | self.breached_rules)}
        if eq is not None and eq > 0:
            if "max_drawdown" in still | self.breached_rules:
                self.drawdown_peak = eq
                out["drawdown_from_equity_usdt"] = eq
            if "max_daily_loss" in still | self.breached_rules:
                self.day_start_equity = eq
                self.account = dataclasses.replace(self.account, day_start_equity_usdt=eq)
                out["daily_loss_from_equity_usdt"] = eq
        self.account = self._with_own_drawdown(self.account)
        return out

    def _with_own_drawdown(self, acct: Account) -> Account:
        """Drawdown from the peak since the operator's re-arm, when there was one."""
        eq = acct.equity_usdt
        if self.drawdown_peak is None or eq is None or eq <= 0:
            return acct
        self.drawdown_peak = max(self.drawdown_peak, eq)
        return dataclasses.replace(acct, drawdown=max(0.0, 1.0 - eq / self.drawdown_peak))

    def _refresh(self, wall: float) -> None:
        """The account from the execution stage's metrics (the truth, also after a restart)."""
        f = self._ctx.figures()
        if not f.account_known:
            return
        day = utc_day(wall)
        if day != self.day:
            self.day, self.day_start_equity = day, f.equity_usdt
            self._state_dirty = True
        self.account = Account(
            equity_usdt=f.equity_usdt, gross_exposure_usdt=f.gross_exposure_usdt,
            drawdown=f.drawdown,
            positions_usdt=dict(f.position_notional_usdt) or self.account.positions_usdt,
            day_start_equity_usdt=self.day_start_equity)
        self.account = self._with_own_drawdown(self.account)

    async def _check(self) -> None:
        found = check_account(self.account, self.settings)
        for rule in sorted(self.acknowledged - {b.rule for b in found}):
            # Back within the limit the operator acknowledged: the rule is armed again.
            self.acknowledged.discard(rule)
            self._state_dirty = True
            self._log_line({"event": "rearmed", "rule": rule})
        breaches = [b for b in found
                    if b.rule not in self.breached_rules and b.rule not in self.acknowledged]
        if breaches:
            self._breach(breaches)
        await self._flush()

    def _breach(self, breaches: list[Breach]) -> None:
        for b in breaches:
            self.breached_rules.add(b.rule)
            self._m_breaches.labels(b.rule).inc()
            self._log_line({"event": "violation", "rule": b.rule, "message": b.message,
                            "value": b.value, "limit": b.limit})
        reason = "; ".join(f"{b.rule}: {b.message}" for b in breaches)
        control = self._ctx.control
        if not self.halted:
            self.halted, self.halt_reason = True, reason
            self.halted_at = control.halt(CAUSE, reason).ts
            self._m_halted.set(1)
            self._state_dirty = True
            self._log_line({"event": "halt", "reason": reason})
        control.raise_incident(CAUSE, "governor_halt", reason, severity="critical",
                               rules=[b.rule for b in breaches])
        self._ctx.log.error("governor.violation", rules=[b.rule for b in breaches],
                            reason=reason)

    def _log_line(self, record: dict[str, Any]) -> None:
        self._pending.append({"ts": time.time(), **record})

    async def _flush(self, force_state: bool = False) -> None:
        """Write pending compliance lines, and the state when it changed (off the loop)."""
        assert self._dir is not None
        lines = list(self._pending)
        self._pending.clear()
        state = self.snapshot() if (self._state_dirty or force_state) else None
        self._state_dirty = False
        if lines or state is not None:
            await asyncio.to_thread(self._write, self._dir, lines, state)

    @staticmethod
    def _write(folder: Path, lines: list[dict[str, Any]], state: dict[str, Any] | None) -> None:
        # Compliance first: if we die between the two, the record of why exists.
        append_jsonl(folder / COMPLIANCE_FILE, lines)
        if state is not None:
            write_json_atomic(folder / STATE_FILE, state)

    def snapshot(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "halted": self.halted, "reason": self.halt_reason,
                "halted_at": self.halted_at, "breached_rules": sorted(self.breached_rules),
                "day": self.day, "day_start_equity_usdt": self.day_start_equity,
                "acknowledged": sorted(self.acknowledged),
                "drawdown_peak_usdt": self.drawdown_peak}

    def _restore(self, state: Any) -> None:
        if not state:
            return
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"{STATE_FILE}: state version {state.get('version')!r}, "
                             f"expected {STATE_VERSION}")
        self.halted = bool(state.get("halted", False))
        self.halt_reason = str(state.get("reason", ""))
        self.halted_at = state.get("halted_at")
        self.breached_rules = set(state.get("breached_rules", []))
        self.day = state.get("day")
        self.day_start_equity = state.get("day_start_equity_usdt")
        self.acknowledged = set(state.get("acknowledged", []))
        self.drawdown_peak = state.get("drawdown_peak_usdt")

    def status(self) -> dict[str, Any]:
        return {"halted": self.halted, "reason": self.halt_reason, "halted_at": self.halted_at,
                "breached_rules": sorted(self.breached_rules), "day": self.day,
                "day_start_equity_usdt": self.day_start_equity,
                "acknowledged": sorted(self.acknowledged),
                "drawdown_peak_usdt": self.drawdown_peak,
                "limits": dataclasses.asdict(self.settings)}
