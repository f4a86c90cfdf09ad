"""Where `dolphind top` gets its data: the daemon's Command Center stream (``GET /ui/events``).

The same Server-Sent Events the web page reads: ``hello`` (a snapshot, the vel_div history and
the recent feed), ``tick`` (twice a second) and ``feed`` (control actions, at once). The state
bus (Hazelcast) is not a source yet: this stream carries everything the panels show.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, AsyncGenerator

import aiohttp
import orjson

from dolphind.backoff import jittered


@dataclass(frozen=True, slots=True)
class Event:
    name: str  # hello | tick | feed | error
    data: Any


def parse_sse(block: bytes) -> Event | None:
    """One SSE message (the lines before a blank line) as an Event; None for a comment."""
    name, data = "message", []
    for line in block.split(b"\n"):
        if line.startswith(b"event:"):
            name = line[6:].strip().decode()
        elif line.startswith(b"data:"):
            data.append(line[5:].lstrip())
    if not data:
        return None
    return Event(name, orjson.loads(b"\n".join(data)))


async def stream(base_url: str, retry_s: float = 1.0) -> AsyncGenerator[Event, None]:
    """Events from the daemon, forever: a lost connection is an ``error`` event, then a retry."""
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            try:
                async with session.get(base_url + "/ui/events") as resp:
                    if resp.status != 200:
                        raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status,
                                                          message=await resp.text())
                    buf = b""
                    async for chunk in resp.content.iter_any():
                        buf += chunk
                        while b"\n\n" in buf:
                            block, buf = buf.split(b"\n\n", 1)
                            event = parse_sse(block)
                            if event is not None:
                                yield event
                raise aiohttp.ServerDisconnectedError("the daemon closed the stream")
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                yield Event("error", f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(jittered(retry_s))


# ---- the state bus (Hazelcast) ------------------------------------------------------------

def bus_config(config_path: str | None) -> Any | None:
    """``[statebus]`` of a config file when its kind is "hazelcast", else None. Only that table
    is read (like ``dolphind status`` reads only ``[ops]``): no trading credentials needed."""
    import dataclasses
    import tomllib

    from dolphind.config import StateBusConfig

    if not config_path:
        return None
    with open(config_path, "rb") as f:
        table = tomllib.load(f).get("statebus", {})
    if table.get("kind") != "hazelcast":
        return None
    names = {f.name for f in dataclasses.fields(StateBusConfig)}
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                              for k, v in table.items() if k in names}
    return StateBusConfig(**values)


async def bus_stream(cfg: Any) -> AsyncGenerator[Event, None]:
    """The daemon's own keys on the cluster (safety, state, meta-health ``latest``), as ``bus``
    events: the current values first, then every update pushed by an entry listener."""
    import warnings

    from dolphind.statebus.base import META_HEALTH, SAFETY, STATE
    from dolphind.statebus.hazelcast import client_options, remote_key

    with warnings.catch_warnings():  # the package imports asyncore (deprecated) as well
        warnings.simplefilter("ignore", DeprecationWarning)
        from hazelcast.asyncio import HazelcastClient

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Event] = asyncio.Queue()
    options = {**client_options(cfg), "async_start": False}

    def deliver(map_name: str, raw: Any) -> None:
        try:
            value = orjson.loads(raw)
        except (orjson.JSONDecodeError, TypeError) as exc:
            queue.put_nowait(Event("error", f"{map_name}: not JSON ({exc})"))
            return
        queue.put_nowait(Event("bus", {"map": map_name, "value": value}))

    client = await HazelcastClient.create_and_start(**options)
    try:
        for map_name in (SAFETY, STATE, META_HEALTH):
            key = remote_key(cfg.namespace, map_name, "latest")
            m: Any = await client.get_map(map_name)

            def on_entry(event: Any, name: str = map_name) -> None:
                # Delivered on the client's thread or the loop: hand it to the loop either way.
                loop.call_soon_threadsafe(deliver, name, event.value)

            await m.add_entry_listener(include_value=True, key=key, added_func=on_entry,
                                       updated_func=on_entry)
            current = await m.get(key)
            if current is not None:
                deliver(map_name, current)
        while True:
            yield await queue.get()
    finally:
        await client.shutdown()
