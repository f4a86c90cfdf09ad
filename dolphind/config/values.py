"""Parsers of the string values a config holds (the ops address, replay start and end)."""

from __future__ import annotations

import datetime as dt


def parse_utc(value: str) -> int:
    """An ISO date or time (UTC unless it says otherwise) as epoch nanoseconds."""
    stamp = dt.datetime.fromisoformat(value)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.timezone.utc)
    return int(stamp.timestamp()) * 10**9 + stamp.microsecond * 1000


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (an IPv6 host in brackets) as (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {listen!r}")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"port must be 0-65535, got {port!r}")
    return host.strip("[]"), int(port)
