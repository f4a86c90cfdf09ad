"""structlog set-up: JSON lines (orjson) to stdout, or key=value on a terminal.

One snake_case event name per line (`feed.reconnect`, `risk.rejected`) with context bound
(`stage=`, `symbol=`, `plugin=`). supervisord and journald capture stdout.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import orjson
import structlog
from structlog.tracebacks import ExceptionDictTransformer

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def configure(level: str = "info", fmt: Literal["auto", "json", "console"] = "auto") -> None:
    use_console = fmt == "console" or (fmt == "auto" and sys.stdout.isatty())
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if use_console:
        processors = shared + [structlog.processors.format_exc_info,
                               structlog.dev.ConsoleRenderer(colors=False)]
        factory: structlog.types.WrappedLogger = structlog.PrintLoggerFactory(sys.stdout)
    else:
        # No frame locals in tracebacks: a crash inside a signing call would otherwise write the
        # API secret and signed parameters into the log (structlog shows locals by default).
        tracebacks = structlog.processors.ExceptionRenderer(
            ExceptionDictTransformer(show_locals=False))
        processors = shared + [tracebacks,
                               structlog.processors.JSONRenderer(serializer=orjson.dumps)]
        factory = structlog.BytesLoggerFactory(sys.stdout.buffer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=factory,
        # Not cached: a reload may change the level, and loggers must see it.
        cache_logger_on_first_use=False,
    )
    _route_stdlib(level, shared, processors[-2:], use_console)


def _route_stdlib(level: str, shared: list[structlog.types.Processor],
                  tail: list[structlog.types.Processor], use_console: bool) -> None:
    """Libraries log through the stdlib (asyncio, aiohttp, ccxt): the same one-line format on
    stdout, so a log shipper never meets a stray plain-text line between the JSON ones."""
    if use_console:
        renderer = tail[-1]
    else:
        renderer = structlog.processors.JSONRenderer(
            serializer=lambda obj, **kw: orjson.dumps(obj, default=str).decode())
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, tail[0], renderer]))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(_LEVELS[level])
