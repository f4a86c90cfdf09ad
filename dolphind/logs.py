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
    shared = [
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
