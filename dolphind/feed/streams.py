"""Which Binance streams the feed subscribes, and how they are grouped into connections.

Routing (Binance, since 2026-04): ``/public`` carries depth and bookTicker, ``/market`` carries
aggTrade, kline and markPrice. A connection on the wrong route silently receives nothing, so
every kind goes to its own routed connections, at most ``max_streams_per_conn`` streams each:
``<ws_base_url>/<route>/stream?streams=a/b/c``.
"""

from __future__ import annotations

from dolphind.config import BinanceFeedConfig
from dolphind.feed.parse import AGG_TRADE, BOOK_TICKER, DEPTH5, MARK_PRICE, stream_kind

ROUTE_OF_KIND = {DEPTH5: "public", BOOK_TICKER: "public", AGG_TRADE: "market",
                 MARK_PRICE: "market"}


def plan_streams(cfg: BinanceFeedConfig) -> dict[str, list[str]]:
    """The streams to subscribe, grouped by route, in a stable order."""
    routes: dict[str, list[str]] = {"public": [], "market": []}
    syms = [s.lower() for s in cfg.symbols]
    if cfg.bar_source == "aggTrade":
        routes["market"] += [f"{s}@aggTrade" for s in syms]
    else:
        routes["market"].append("!markPrice@arr@1s")
    if cfg.depth:
        routes["public"] += [f"{s}@depth5@500ms" for s in syms]
    if cfg.book_ticker:
        routes["public"] += [f"{s}@bookTicker" for s in syms]
    for route, streams in routes.items():
        for st in streams:
            kind = stream_kind(st)
            assert kind is not None and ROUTE_OF_KIND[kind] == route, st
    return {r: s for r, s in routes.items() if s}


def shard(streams: list[str], max_per_conn: int) -> list[list[str]]:
    """Split ``streams`` into as few connections as the limit allows, evenly sized."""
    if not streams:
        return []
    n = -(-len(streams) // max_per_conn)
    size = -(-len(streams) // n)
    return [streams[i:i + size] for i in range(0, len(streams), size)]


def stream_url(base: str, route: str, streams: list[str]) -> str:
    return f"{base}/{route}/stream?streams={'/'.join(streams)}"
