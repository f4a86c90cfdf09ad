"""The one control plane: HTTP endpoints, signals and plugins all act through these methods.

Every action records who asked for it and why (``cause``), logs it, and keeps the last actions
for /status; the audit log (execution issue) subscribes to the same records.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Any, Callable

import structlog

from dolphind.ops.metrics import Metrics

log = structlog.get_logger("dolphind.control")


@dataclass(frozen=True, slots=True)
class ControlAction:
    ts: float
    action: str
    cause: str
    detail: dict[str, Any]


class Control:
    def __init__(self, metrics: Metrics,
                 request_reload: Callable[[str], None]) -> None:
        self._metrics = metrics
        self._request_reload = request_reload
        self.halted = False
        self.halt_reason: str | None = None
        self.recent: collections.deque[ControlAction] = collections.deque(maxlen=50)
        self._listeners: list[Callable[[ControlAction], None]] = []

    def subscribe(self, listener: Callable[[ControlAction], None]) -> None:
        self._listeners.append(listener)

    def _record(self, action: str, cause: str, **detail: Any) -> ControlAction:
        rec = ControlAction(time.time(), action, cause, detail)
        self.recent.append(rec)
        log.info(f"control.{action}", cause=cause, **detail)
        for listener in self._listeners:
            listener(rec)
        return rec

    def halt(self, cause: str, reason: str = "") -> ControlAction:
        """Stop new entries (exits still run). Idempotent."""
        self.halted = True
        self.halt_reason = reason or cause
        self._metrics.trading_halted.set(1)
        return self._record("halt", cause, reason=reason)

    def resume(self, cause: str) -> ControlAction:
        self.halted = False
        self.halt_reason = None
        self._metrics.trading_halted.set(0)
        return self._record("resume", cause)

    def reload(self, cause: str) -> ControlAction:
        """Ask the daemon to re-read its config file (the daemon's loop does the work)."""
        self._request_reload(cause)
        return self._record("reload_requested", cause)

    def status(self) -> dict[str, Any]:
        return {"halted": self.halted, "halt_reason": self.halt_reason,
                "recent_actions": [{"ts": a.ts, "action": a.action, "cause": a.cause,
                                    **a.detail} for a in list(self.recent)[-10:]]}
