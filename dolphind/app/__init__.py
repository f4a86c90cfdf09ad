"""The one place that builds concrete parts and wires them together.

- ``services``: the daemon's shared services (metrics, health, control, state bus, plugins,
  systemd) and its ops HTTP server, from the config alone;
- ``pipeline``: the stages (feed, market, scan, alpha, execution) and the books they trade on,
  from those services; ``feeds``: the live feed or the replay; ``books``: the store, audit
  log and venue; ``venues``: the Binance venue's opening; ``execution``: the execution stage
  with its rails and overrides; ``kernels``: the numba compile;
- ``build_daemon``: a ``Daemon`` given all of it. The daemon owns the loop, signals, reload and
  shutdown; it never imports this package (``dolphind.daemon.run`` takes ``build_daemon``).
"""

from __future__ import annotations

import functools

from dolphind.app.pipeline import Pipeline, build_pipeline, venue_entry_check
from dolphind.app.services import open_ops_server, open_services
from dolphind.config import Config
from dolphind.daemon import Daemon

__all__ = ["Pipeline", "build_daemon", "build_pipeline", "open_ops_server", "open_services",
           "venue_entry_check"]


def build_daemon(cfg: Config, exit_when_done: bool = False,
                 record_equity: bool = False) -> Daemon:
    """A daemon running ``cfg``. ``exit_when_done``: stop once the pipeline has finished (a
    backtest); ``record_equity``: the ledger keeps the equity curve (the backtest report)."""
    services = open_services(cfg)
    return Daemon(services,
                  open_pipeline=functools.partial(build_pipeline, services, record_equity),
                  open_ops_server=functools.partial(open_ops_server, services.config),
                  exit_when_done=exit_when_done)
