"""The plugin API, version ``API_VERSION``: what a plugin is, the hooks it may have, the context
it is started with (SPEC §7; the full contract, hook by hook, is docs/plugin-api.md).

A plugin is any object with ``API_VERSION``, ``name``, ``version``, ``validate``, ``start``,
``reload`` and ``stop`` (``Plugin``) and any subset of the hooks of ``Hooks``. It implements
them structurally: it never subclasses or imports anything from the daemon but this package.

Each hook takes one typed, immutable event, so adding a field to an event never breaks an older
plugin. The async hooks run in the plugin's own task; ``veto`` is synchronous and budgeted.
A plugin reads daemon state only through ``ctx.figures()`` (``figures.Figures``) and acts on the
daemon only through ``ctx.control`` and ``ctx.features``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

from dolphind.control import Control, ControlAction
from dolphind.events import Bar, Fill, Order, OrderIntent, ScanRecord
from dolphind.plugins.figures import Figures

__all__ = ["API_VERSION", "HOOKS", "Bar", "ClosedTradeView", "Control", "ControlAction",
           "FeaturePort", "Fill", "Hooks", "LogPort", "Order", "OrderCheckView", "OrderIntent",
           "Plugin", "PluginContext", "PostureChange", "ScanRecord", "Tick"]

# Raised when the context or a hook changes in a way an older plugin cannot follow; a plugin
# declares the version it was written for and the loader refuses any other.
# 2: the typed API package (issue 14): the context's state bus became the ``features`` port,
# ``figures()`` replaced reading metric names, ``on_posture`` receives a ``PostureChange``.
API_VERSION = 2


@dataclass(frozen=True, slots=True)
class Tick:
    """The host's periodic ``on_tick`` event: monotonic and wall time when it was queued."""

    mono: float
    wall: float


@dataclass(frozen=True, slots=True)
class PostureChange:
    """The alpha engine's posture changed (``on_posture``): from ``previous`` to ``posture``
    at scan ``scan_number``, with the regime multiplier ``rm`` of that decision."""

    posture: str
    previous: str
    rm: float
    scan_number: int


class ClosedTradeView(Protocol):
    """A closed round trip as the ledger reports it (``on_trade``). ``pnl_usdt`` is net of
    fees; ``side`` is "LONG" or "SHORT"; times are ns since the epoch."""

    @property
    def trade_id(self) -> str: ...
    @property
    def symbol(self) -> str: ...
    @property
    def side(self) -> str: ...
    @property
    def entry_ts_ns(self) -> int: ...
    @property
    def exit_ts_ns(self) -> int: ...
    @property
    def entry_price(self) -> float: ...
    @property
    def exit_price(self) -> float: ...
    @property
    def qty(self) -> float: ...
    @property
    def notional_usdt(self) -> float: ...
    @property
    def leverage(self) -> float: ...
    @property
    def fees_usdt(self) -> float: ...
    @property
    def pnl_usdt(self) -> float: ...
    @property
    def exit_reason(self) -> str: ...
    @property
    def bars_held(self) -> int: ...
    @property
    def funding_usdt(self) -> float: ...


class OrderCheckView(Protocol):
    """The order a ``veto`` is asked about, as the risk rails see it: ``notional_usdt`` is
    qty x reference price on the venue's grid; ``leverage`` is what the alpha engine asked for;
    ``reduce_only`` is True for an exit (never refused by a broken hook)."""

    @property
    def symbol(self) -> str: ...
    @property
    def side(self) -> str: ...
    @property
    def notional_usdt(self) -> float: ...
    @property
    def leverage(self) -> float: ...
    @property
    def reduce_only(self) -> bool: ...
    @property
    def client_id(self) -> str: ...


class FeaturePort(Protocol):
    """Publishes a plugin's figure into the daemon's features map (the state bus), where a
    stage may read it (the scheduler's ACB threshold reaches the alpha stage this way)."""

    def __call__(self, key: str, value: Mapping[str, Any]) -> None: ...


class LogPort(Protocol):
    """A structlog-style logger with ``plugin=<name>`` already bound."""

    def debug(self, event: str, **kw: Any) -> Any: ...
    def info(self, event: str, **kw: Any) -> Any: ...
    def warning(self, event: str, **kw: Any) -> Any: ...
    def error(self, event: str, **kw: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class PluginContext:
    """What the daemon hands a plugin at ``start``; all a plugin may use of the daemon.

    ``settings`` is a private copy of the plugin's ``[plugins.<name>]`` table.
    ``control`` is the control plane: the plugin's only way to act (halt, throttle, incident).
    ``metrics_registry`` is where the plugin registers its OWN metrics; it does not read the
    daemon's there (their names are not a contract): ``figures()`` is the read side.
    ``features`` publishes into the daemon's features map. ``data_dir`` is the plugin's own
    folder (created by the plugin when it writes). ``figures()`` returns one consistent
    snapshot of the daemon state a plugin may read; cheap, call it on the loop.
    """

    name: str
    settings: Mapping[str, Any]
    control: Control
    metrics_registry: Any  # a prometheus_client.CollectorRegistry
    features: FeaturePort
    data_dir: Path
    log: LogPort
    figures: Callable[[], Figures]


class Hooks(Protocol):
    """Every hook a plugin may implement, each optional. The host finds them by attribute.

    The docs (docs/plugin-api.md) name each hook and its argument; a test keeps them in step.
    """

    async def on_bar(self, bar: Bar) -> None:
        """A bar closed (the market stage published it)."""

    async def on_scan(self, scan: ScanRecord) -> None:
        """The eigenscan of a bar is done."""

    async def on_intent(self, intent: OrderIntent) -> None:
        """The alpha engine asked for an order (before the risk rails)."""

    async def on_order(self, order: Order) -> None:
        """An order changed state (a new immutable snapshot)."""

    async def on_fill(self, fill: Fill) -> None:
        """An order was (partly) filled."""

    async def on_posture(self, change: PostureChange) -> None:
        """The alpha engine's posture changed."""

    async def on_trade(self, trade: ClosedTradeView) -> None:
        """A round trip closed (read from the ledger)."""

    async def on_incident(self, incident: ControlAction) -> None:
        """An ``incident`` control action (raised by a plugin, a stage or the operator)."""

    async def on_control(self, action: ControlAction) -> None:
        """Any control-plane action (halt, resume, throttle, incident, reload, ...)."""

    async def on_tick(self, tick: Tick) -> None:
        """Every ``tick_interval_s`` seconds (attribute on the plugin, default 1; read at each
        tick). Queued only when the previous tick was handled: a slow plugin skips ticks."""

    def veto(self, order: OrderCheckView) -> str | None:
        """Synchronous pre-trade check: a reason to refuse ``order``, or None. Must return
        within ``plugins.veto_budget_ms``; raising or overrunning refuses an entry (fail
        closed) and never refuses an exit (``reduce_only``)."""


# The queued (async) hooks, in the order the docs list them; ``veto`` is called, not queued.
HOOKS: tuple[str, ...] = ("on_bar", "on_scan", "on_intent", "on_order", "on_fill", "on_posture",
                          "on_incident", "on_tick", "on_control", "on_trade")


@runtime_checkable
class Plugin(Protocol):
    """The members every plugin has (the hooks are optional: see ``Hooks``)."""

    API_VERSION: int
    name: str
    version: str

    def validate(self, settings: Mapping[str, Any]) -> list[str]:
        """Problems with the plugin's ``[plugins.<name>]`` table, one per line, each naming
        its key (called at load, by ``check-config`` and before a reload is applied)."""
        ...

    async def start(self, ctx: PluginContext) -> None: ...

    async def reload(self, settings: Mapping[str, Any]) -> None: ...

    async def stop(self) -> None: ...
