"""The embedded, in-process state bus (the default for a single daemon)."""

from __future__ import annotations

from typing import Any

import orjson


class MemoryStateBus:
    """Values are stored as JSON bytes, so readers get a private copy and the stored form is
    exactly what a remote bus would carry (a value that is not JSON-able is refused here too,
    not only in production with Hazelcast)."""

    name = "memory"

    def __init__(self) -> None:
        self._maps: dict[str, dict[str, bytes]] = {}
        self.rejected = 0

    def put(self, map_name: str, key: str, value: Any) -> None:
        try:
            encoded = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
        except TypeError:
            self.rejected += 1
            return
        self._maps.setdefault(map_name, {})[key] = encoded

    def get(self, map_name: str, key: str) -> Any | None:
        raw = self._maps.get(map_name, {}).get(key)
        return None if raw is None else orjson.loads(raw)

    def keys(self, map_name: str) -> list[str]:
        return sorted(self._maps.get(map_name, {}))

    def healthy(self) -> bool:
        return True
