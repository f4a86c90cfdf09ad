"""The bus ``[statebus] kind`` asks for, wired to the daemon's metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dolphind.statebus.hazelcast import HazelcastStateBus, client_options
from dolphind.statebus.memory import MemoryStateBus


def open_bus(config: Any, metrics: Any) -> Any:
    """A MemoryStateBus (default) or a HazelcastStateBus (not started: ``await bus.start()``
    on the loop; it connects in the background)."""
    writes = {o: metrics.statebus_writes.labels(o) for o in ("ok", "rejected")}
    cfg = config.statebus
    if cfg.kind != "hazelcast":
        return MemoryStateBus(on_write=lambda outcome: writes[outcome].inc())
    file_dir = Path(cfg.file_dir)
    if not file_dir.is_absolute():
        file_dir = config.data_dir / file_dir
    events = {e: metrics.statebus_events.labels(e) for e in HazelcastStateBus.EVENTS}
    bus = HazelcastStateBus(cfg, file_dir, client_options(cfg, resolve=config.resolve),
                            on_event=lambda event: events[event].inc(),
                            on_write=lambda outcome: writes[outcome].inc())
    metrics.statebus_file_only.set_function(lambda: 0.0 if bus.healthy() else 1.0)
    return bus
