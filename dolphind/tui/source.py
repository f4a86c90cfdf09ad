"""Where `dolphind top` gets its data: the daemon's Command Center stream (``GET /ui/events``).

The same Server-Sent Events the web page reads: ``hello`` (a snapshot, the vel_div history and
the recent feed), ``tick`` (twice a second) and ``feed`` (control actions, at once). The state
bus (Hazelcast) is not a source yet: this stream carries everything the panels show.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, AsyncIterator

import aiohttp
import orjson


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


async def stream(base_url: str, retry_s: float = 1.0) -> AsyncIterator[Event]:
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
                await asyncio.sleep(retry_s)
