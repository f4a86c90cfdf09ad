"""The one control plane: HTTP endpoints, signals and plugins all act through these methods.

Every action records who asked for it and why (``cause``: a plugin's name, ``http:ADDR``,
``signal:SIG``), logs it, keeps the last actions for /status, and passes the record to every
subscriber (the audit log, the plugin host's ``on_incident`` forwarding, a governor watching
for an operator's resume). A subscriber that raises is logged and counted; it never stops the
action.

What it controls (SPEC §7):

- halt / resume trading. Each cause holds its own halt: ``release_halt(cause)`` lets go of one
  hold (a plugin undoing its own halt can never lift a governor's), ``resume`` is the
  operator's all-clear and lifts every hold.
- a risk multiplier for a duration and an order-rate throttle for a duration. Both only ever
  reduce risk (factors in (0, 1]); while several are active the smallest wins; each expires by
  itself. The plane only holds them: ``dolphind.risk.overrides`` reads ``risk_multiplier()`` /
  ``order_rate_factor()`` and says what they do to the rails' config and to new entries.
- reconnect the feed and flatten: requests the feed / execution stage act on (a generation
  counter to poll, and the action passed to subscribers).
- raise an incident: a record that plugins (comms) and the audit log receive.

No I/O here, and time comes from injected clocks: the plane is a pure state machine with
listeners, so tests drive expiry without sleeping.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Any, Callable

import structlog

from dolphind.telemetry.metrics import Metrics

log = structlog.get_logger("dolphind.control")

SEVERITIES = ("info", "warning", "critical")


@dataclass(frozen=True, slots=True)
class ControlAction:
    ts: float
    action: str
    cause: str
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Override:
    """A temporary factor in (0, 1] set by ``cause`` (one per cause and ``key``)."""

    kind: str  # "risk_multiplier" | "throttle"
    cause: str
    key: str
    factor: float
    expires_mono: float
    reason: str


class Control:
    def __init__(self, metrics: Metrics,
                 request_reload: Callable[[str], None],
                 monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self._metrics = metrics
        self._request_reload = request_reload
        self._mono = monotonic
        self._wall = wall
        self.halted = False
        self.halt_reason: str | None = None
        # cause -> reason of every halt in force; trading resumes when the last one is gone.
        self.halt_holds: dict[str, str] = {}
        self.recent: collections.deque[ControlAction] = collections.deque(maxlen=50)
        self._listeners: list[Callable[[ControlAction], None]] = []
        self.flatten_requests = 0
        # The feed compares this with the value it last acted on (a poll, no callback needed).
        self.feed_reconnect_requests = 0
        self.incidents_total = 0
        self._overrides: dict[tuple[str, str, str], Override] = {}

    # ---- subscribers ---------------------------------------------------------------------

    def subscribe(self, listener: Callable[[ControlAction], None]) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[ControlAction], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _record(self, action: str, cause: str, **detail: Any) -> ControlAction:
        rec = ControlAction(self._wall(), action, cause, detail)
        self.recent.append(rec)
        self._metrics.control_actions.labels(action).inc()
        log.info(f"control.{action}", cause=cause, **detail)
        for listener in list(self._listeners):
            try:
                listener(rec)
            except Exception as exc:  # a broken subscriber must not undo or block the action
                self._metrics.control_listener_failures.inc()
                log.error("control.listener_failed", action=action, error=repr(exc))
        return rec

    # ---- halt / resume -------------------------------------------------------------------

    def halt(self, cause: str, reason: str = "") -> ControlAction:
        """Stop new entries (exits still run). Idempotent; ``cause`` holds the halt."""
        self.halt_holds[cause] = reason or cause
        self.halted = True
        self.halt_reason = reason or cause
        self._metrics.trading_halted.set(1)
        return self._record("halt", cause, reason=reason)

    def resume(self, cause: str) -> ControlAction:
        """The operator's all-clear: lifts every halt, whoever holds it."""
        lifted = sorted(self.halt_holds)
        self.halt_holds.clear()
        self.halted = False
        self.halt_reason = None
        self._metrics.trading_halted.set(0)
        return self._record("resume", cause, lifted=lifted)

    def release_halt(self, cause: str, reason: str = "") -> ControlAction:
        """Let go of ``cause``'s own halt; trading resumes only if no other hold remains."""
        self.halt_holds.pop(cause, None)
        if not self.halt_holds:
            self.halted = False
            self.halt_reason = None
            self._metrics.trading_halted.set(0)
        else:
            self.halt_reason = next(reversed(self.halt_holds.values()))
        return self._record("release_halt", cause, reason=reason,
                            still_halted_by=sorted(self.halt_holds))

    # ---- temporary risk reductions -------------------------------------------------------

    def set_risk_multiplier(self, cause: str, multiplier: float, duration_s: float,
                            reason: str = "", key: str = "") -> ControlAction:
        """Scale new risk (order sizes, exposure caps) by ``multiplier`` for ``duration_s``."""
        return self._override("risk_multiplier", cause, multiplier, duration_s, reason, key)

    def throttle(self, cause: str, rate_factor: float, duration_s: float, reason: str = "",
                 key: str = "") -> ControlAction:
        """Scale the order-rate limit (risk.max_orders_per_minute) by ``rate_factor``."""
        return self._override("throttle", cause, rate_factor, duration_s, reason, key)

    def _override(self, kind: str, cause: str, factor: float, duration_s: float, reason: str,
                  key: str) -> ControlAction:
        # Only reductions: the control plane is a way to take risk off, never to add it.
        if not 0.0 < factor <= 1.0:
            raise ValueError(f"{kind}: factor must be in (0, 1], got {factor!r}")
        if not duration_s > 0.0:
            raise ValueError(f"{kind}: duration_s must be > 0, got {duration_s!r}")
        self.expire()
        self._overrides[(kind, cause, key)] = Override(kind, cause, key, float(factor),
                                                       self._mono() + duration_s, reason)
        self._set_gauges()
        return self._record(kind, cause, factor=factor, duration_s=duration_s, reason=reason,
                            key=key, effective=self._effective(kind))

    def clear_overrides(self, cause: str) -> ControlAction:
        """The operator's undo of every risk multiplier and throttle in force."""
        cleared = len(self._overrides)
        self._overrides.clear()
        self._set_gauges()
        return self._record("overrides_cleared", cause, cleared=cleared)

    def expire(self) -> list[Override]:
        """Drop the overrides whose time is up (each reported as ``<kind>_expired``).

        Readers call it, so expiry needs no timer; the daemon's housekeeping may call it too,
        which keeps the gauges current while nobody reads."""
        now = self._mono()
        gone = [o for o in self._overrides.values() if o.expires_mono <= now]
        for o in gone:
            del self._overrides[(o.kind, o.cause, o.key)]
        if gone:
            self._set_gauges()
            for o in gone:
                self._record(f"{o.kind}_expired", o.cause, key=o.key, factor=o.factor,
                             effective=self._effective(o.kind))
        return gone

    def _effective(self, kind: str) -> float:
        return min((o.factor for o in self._overrides.values() if o.kind == kind), default=1.0)

    def _set_gauges(self) -> None:
        self._metrics.risk_multiplier.set(self._effective("risk_multiplier"))
        self._metrics.order_rate_factor.set(self._effective("throttle"))

    def risk_multiplier(self) -> float:
        """The factor (0, 1] that sizing applies to new entries; 1.0 when nothing is set."""
        self.expire()
        return self._effective("risk_multiplier")

    def order_rate_factor(self) -> float:
        """The factor (0, 1] on the order-rate limit; 1.0 when no throttle is in force."""
        self.expire()
        return self._effective("throttle")

    def overrides(self) -> list[dict[str, Any]]:
        self.expire()
        now = self._mono()
        return [{"kind": o.kind, "cause": o.cause, "key": o.key, "factor": o.factor,
                 "remaining_s": round(o.expires_mono - now, 3), "reason": o.reason}
                for o in self._overrides.values()]

    # ---- requests other stages act on ----------------------------------------------------

    def flatten(self, cause: str, reason: str = "") -> ControlAction:
        """Ask the execution stage to close every open position with reduce-only orders.

        Only records the request: the execution stage (a subscriber) acts on it. It does not
        halt; callers that want no re-entry halt first (POST /flatten does, by default).
        """
        self.flatten_requests += 1
        return self._record("flatten", cause, reason=reason)

    def reconnect_feed(self, cause: str, reason: str = "") -> ControlAction:
        """Ask the live feed to drop and re-open its connections (it polls
        ``feed_reconnect_requests`` or subscribes to ``reconnect_feed`` actions)."""
        self.feed_reconnect_requests += 1
        return self._record("reconnect_feed", cause, reason=reason,
                            request=self.feed_reconnect_requests)

    def raise_incident(self, cause: str, kind: str, message: str, severity: str = "warning",
                       **detail: Any) -> ControlAction:
        """Record an incident; subscribers (audit log, plugins' ``on_incident``) get it."""
        if severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
        self.incidents_total += 1
        return self._record("incident", cause, kind=kind, severity=severity, message=message,
                            **detail)

    def reload(self, cause: str) -> ControlAction:
        """Ask the daemon to re-read its config file (the daemon's loop does the work)."""
        self._request_reload(cause)
        return self._record("reload_requested", cause)

    def reloaded(self, cause: str, ok: bool, **detail: Any) -> ControlAction:
        """Record a config reload's outcome (the daemon did the work): every reload, whether
        asked for by HTTP, a signal or a plugin, ends up audited with what it changed."""
        return self._record("reload", cause, ok=ok, **detail)

    def status(self) -> dict[str, Any]:
        return {"halted": self.halted, "halt_reason": self.halt_reason,
                "halted_by": dict(self.halt_holds),
                "risk_multiplier": self.risk_multiplier(),
                "order_rate_factor": self.order_rate_factor(),
                "overrides": self.overrides(),
                "feed_reconnect_requests": self.feed_reconnect_requests,
                "flatten_requests": self.flatten_requests,
                "incidents_total": self.incidents_total,
                "recent_actions": [{"ts": a.ts, "action": a.action, "cause": a.cause,
                                    **a.detail} for a in list(self.recent)[-10:]]}
