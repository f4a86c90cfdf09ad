"""The state bus: shared JSON state by (map, key), named as in bible §15 (SPEC §8).

Writes are fire-and-forget and must never block or fail the trading loop; reads return the
last known value (or None). An implementation that talks to a remote store keeps its own
circuit breaker and serves reads from its local copy while the remote is down.

A bus with background work (the Hazelcast bus's connector, writer and recovery) offers it as
stages (``stages()``), which the daemon runs under supervision from before the pipeline opens
until after it has closed, then calls ``close()``; the in-memory bus offers none.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from dolphind.stage import Stage

# Map names (bible §15).
FEATURES = "DOLPHIN_FEATURES"
SAFETY = "DOLPHIN_SAFETY"
PNL = "DOLPHIN_PNL_BLUE"
STATE = "DOLPHIN_STATE_BLUE"
HEARTBEAT = "DOLPHIN_HEARTBEAT"
META_HEALTH = "DOLPHIN_META_HEALTH"


class StateBus(Protocol):
    name: str

    def put(self, map_name: str, key: str, value: Any) -> None:
        """Publish ``value`` (JSON-able). Never raises, never blocks."""

    def get(self, map_name: str, key: str) -> Any | None:
        """The last value known for (map, key), or None."""

    def healthy(self) -> bool:
        """False while writes are not reaching the store (breaker open)."""

    def status(self) -> dict[str, Any]:
        """What /status shows of the bus (its ``kind`` at least)."""

    def stages(self) -> Sequence[Stage]:
        """The bus's background loops, for the daemon to supervise (none: an empty list)."""

    async def close(self) -> None:
        """Let go of the remote store, once the loops have stopped (nothing to do: return)."""
