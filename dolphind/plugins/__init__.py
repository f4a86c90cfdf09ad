"""The plugin API package (SPEC §7; docs/plugin-api.md): everything a plugin may import.

- ``api``: ``API_VERSION``, the ``Plugin`` members and the typed ``Hooks``, the ``PluginContext``
  a plugin is started with, and every hook's event type (the daemon's own ``Bar``,
  ``ScanRecord``, ``OrderIntent``, ``Order``, ``Fill``, ``ControlAction`` re-exported here,
  plus ``Tick``, ``PostureChange`` and the views of a closed trade and of an order under veto);
- ``figures``: the read-only figures contract, ``Figures`` (what ``ctx.figures()`` returns);
- ``settings``: a ``[plugins.<name>]`` table -> a frozen dataclass, with key-path problems;
- ``windows``: counts over a sliding time window from cumulative figures;
- ``files``: JSONL appends and atomic JSON state files (blocking: call via asyncio.to_thread);
- ``backoff_delay``: the daemon's one retry back-off (capped exponential, jittered);
- ``loader``: the daemon's side (discovery, the version check, isolation, budgets).

A plugin imports from ``dolphind.plugins`` (or its modules) and nothing else of dolphind.
"""

from dolphind.backoff import backoff_delay
from dolphind.plugins.api import (
    API_VERSION,
    HOOKS,
    Bar,
    ClosedTradeView,
    Control,
    ControlAction,
    Fill,
    Order,
    OrderIntent,
    ScanRecord,
    FeaturePort,
    Hooks,
    LogPort,
    OrderCheckView,
    Plugin,
    PluginContext,
    PostureChange,
    Tick,
)
from dolphind.plugins.figures import Figures, LiveFigures
from dolphind.plugins.loader import (
    DEFAULT_TICK_INTERVAL_S,
    ENTRY_POINT_GROUP,
    HOOK_TIMEOUT_S,
    LoadedPlugin,
    PluginError,
    PluginHost,
    check_required,
    discover,
    instantiate,
    validate_plugin_settings,
)

__all__ = [
    "API_VERSION", "HOOKS", "ClosedTradeView", "FeaturePort", "Hooks", "LogPort",
    "OrderCheckView", "Plugin", "PluginContext", "PostureChange", "Tick",
    "Bar", "Control", "ControlAction", "Fill", "Order", "OrderIntent", "ScanRecord",
    "Figures", "LiveFigures", "backoff_delay",
    "DEFAULT_TICK_INTERVAL_S", "ENTRY_POINT_GROUP", "HOOK_TIMEOUT_S", "LoadedPlugin",
    "PluginError", "PluginHost", "check_required", "discover", "instantiate",
    "validate_plugin_settings",
]
