"""The embedded, in-process state bus (the default for a single daemon)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import orjson

from dolphind.stage import Stage


class MemoryStateBus:
    """Values are stored as JSON bytes, so readers get a private copy and the stored form is
    exactly what a remote bus would carry (a value that is not JSON-able is refused here too,
    not only in production with Hazelcast)."""

    name = "memory"

    def __init__(self, on_write: Callable[[str], None] | None = None) -> None:
        """``on_write(outcome)`` is told of every write ("ok" or "rejected"), for the metrics."""
        self._maps: dict[str, dict[str, bytes]] = {}
        self._on_write = on_write or (lambda outcome: None)
        self.rejected = 0

    def put(self, map_name: str, key: str, value: Any) -> None:
        try:
            encoded = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
        except TypeError:
            # A writer bug must not reach the trading loop (writes never raise): it is counted.
            self.rejected += 1
            self._on_write("rejected")
            return
        self._maps.setdefault(map_name, {})[key] = encoded
        self._on_write("ok")

    def get(self, map_name: str, key: str) -> Any | None:
        raw = self._maps.get(map_name, {}).get(key)
        return None if raw is None else orjson.loads(raw)

    def keys(self, map_name: str) -> list[str]:
        return sorted(self._maps.get(map_name, {}))

    def healthy(self) -> bool:
        return True

    def status(self) -> dict[str, Any]:
        return {"kind": self.name}

    def stages(self) -> Sequence[Stage]:
        return []  # nothing runs in the background: a put is a dict assignment

    async def close(self) -> None:
        return None  # nothing to let go of
