"""structlog set-up: JSON lines (orjson) to stdout, or readable lines on a terminal.

One snake_case event name per line (`feed.reconnect`, `risk.rejected`) with context bound
(`stage=`, `symbol=`, `plugin=`). supervisord and journald capture stdout.

The console format is for a person watching the daemon: human UTC times
(``2026-12-07 03:20:29``), colours when stdout is a terminal, and the trading lines a
freqtrade user expects (``trade.fill``, ``trade.closed``, a periodic ``heartbeat``), built by
the pure ``*_fields`` functions below so the JSON format carries exactly the same facts.

Secrets never reach a line: any key that names a token, secret, password, signature or API key
has its value replaced by ``***`` in both formats (a last line of defence; callers do not log
secrets in the first place).
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone
from typing import Any, Literal, Mapping, MutableMapping

import orjson
import structlog
from structlog.tracebacks import ExceptionDictTransformer

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}
_HUMAN_TIME = "%Y-%m-%d %H:%M:%S"
# Substrings of a key whose value is never written (compared lower-case).
_SECRET_KEYS = ("token", "secret", "password", "passwd", "signature", "api_key", "apikey",
                "webhook_url")
REDACTED = "***"


def redact_secrets(_logger: Any, _name: str,
                   event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: blank the value of every key that names a secret."""
    for key in list(event_dict):
        k = str(key).lower()
        # Strings only: a count such as a rate limiter's ``tokens=3`` is not a secret.
        if any(s in k for s in _SECRET_KEYS) and isinstance(event_dict[key], str) \
                and event_dict[key]:
            event_dict[key] = REDACTED
    return event_dict


def humanize_epoch_ns(_logger: Any, _name: str,
                      event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Console only: ``start_ns=1746835200000000000`` is shown as ``start=2025-05-10 00:00:00``
    (a key ending in ``_ns`` holding an epoch time in nanoseconds, years 2001 to 2096)."""
    for key in [k for k in event_dict if isinstance(k, str) and k.endswith("_ns")]:
        value = event_dict[key]
        if isinstance(value, int) and not isinstance(value, bool) and 10**18 <= value < 4 * 10**18:
            event_dict[key[:-3] or key] = human_time(value)
            if key[:-3]:
                del event_dict[key]
    return event_dict


_PNL_KEYS = ("pnl_usdt", "pnl_pct", "gross_usdt", "realised_usdt", "unrealised_usdt")
_GREEN, _RED, _RESET = "\x1b[32m", "\x1b[31m", "\x1b[0m"


def colour_pnl(_logger: Any, _name: str,
               event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Console on a terminal only: PnL figures green when positive, red when negative (fees
    are costs and stay plain)."""
    for key in _PNL_KEYS:
        value = event_dict.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value:
            event_dict[key] = f"{_GREEN if value > 0 else _RED}{value:+g}{_RESET}"
    return event_dict


def human_time(ts_ns: int) -> str:
    """A nanosecond epoch as ``2026-12-07 03:20:29`` (UTC, whole seconds)."""
    return datetime.fromtimestamp(ts_ns / 1e9, tz=timezone.utc).strftime(_HUMAN_TIME)


def fill_fields(symbol: str, side: str, qty: float, price: float, fee_usdt: float,
                liquidity: str, ts_ns: int, reason: str, reduce_only: bool) -> dict[str, Any]:
    """What a ``trade.fill`` line says: one execution, in the units a trader reads."""
    return {"symbol": symbol, "side": side, "qty": _num(qty), "price": _num(price),
            "notional_usdt": round(qty * price, 2), "fee_usdt": round(fee_usdt, 4),
            "liquidity": liquidity, "reason": reason or ("exit" if reduce_only else "entry"),
            "at": human_time(ts_ns)}


def closed_fields(trade: Any) -> dict[str, Any]:
    """What a ``trade.closed`` line says about a ``report.model.ClosedTrade``."""
    gross = trade.pnl_usdt + trade.fees_usdt
    notional = trade.notional_usdt or float("nan")
    return {"symbol": trade.symbol, "side": trade.side, "entry": _num(trade.entry_price),
            "exit": _num(trade.exit_price), "pnl_usdt": round(trade.pnl_usdt, 2),
            "pnl_pct": round(100.0 * trade.pnl_usdt / notional, 3) if notional == notional
            else None, "gross_usdt": round(gross, 2), "fees_usdt": round(trade.fees_usdt, 4),
            "reason": trade.exit_reason, "held": _held(trade.exit_ts_ns - trade.entry_ts_ns),
            "bars": trade.bars_held}


def heartbeat_fields(status: Mapping[str, Any]) -> dict[str, Any]:
    """The ``heartbeat`` line from the daemon's /status document (missing parts: omitted)."""
    out: dict[str, Any] = {"health": (status.get("health") or {}).get("level"),
                           "ready": status.get("ready")}
    ex = status.get("execution") or {}
    if ex:
        open_pos = {s: q for s, q in (ex.get("positions") or {}).items() if q}
        out.update(equity_usdt=_money(ex.get("equity_usdt")),
                   drawdown_pct=_pct(ex.get("drawdown")),
                   # The portfolio's realised PnL is before fees; fees are their own figure.
                   realised_usdt=_money(ex.get("realised_pnl_usdt")),
                   fees_usdt=_money(ex.get("fees_usdt")),
                   unrealised_usdt=_money(ex.get("unrealised_pnl_usdt")),
                   open_positions=len(open_pos),
                   positions=",".join(f"{s}:{q:g}" for s, q in sorted(open_pos.items())) or "-")
    alpha = status.get("alpha") or {}
    if alpha:
        out["posture"] = alpha.get("posture")
    control = status.get("control") or {}
    out["halted"] = bool(control.get("halted"))
    scan = status.get("scan") or {}
    if scan:
        out["warm"] = bool(scan.get("warm"))
        out["scans"] = scan.get("scans")
    strategy = status.get("strategy") or {}
    if strategy:  # issue 18: "ready" is not "can trade"; while warming, how long to wait
        out["can_trade"] = bool(strategy.get("can_trade"))
        if not out["can_trade"]:
            out["first_entry_eta_s"] = strategy.get("first_entry_eta_s")
    return out


def _num(x: float) -> float:
    """Prices and quantities at 8 significant digits: exact enough, short enough to read."""
    return float(f"{x:.8g}")


def _money(x: Any) -> float | None:
    return None if x is None else round(float(x), 2)


def _pct(x: Any) -> float | None:
    return None if x is None else round(100.0 * float(x), 2)


def _held(ns: int) -> str:
    s = max(0, int(ns // 1_000_000_000))
    d, s = divmod(s, 86_400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d" if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


def configure(level: str = "info", fmt: Literal["auto", "json", "console"] = "auto") -> None:
    use_console = fmt == "console" or (fmt == "auto" and sys.stdout.isatty())
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        # Machines get ISO 8601 with microseconds; people get a plain UTC time.
        structlog.processors.TimeStamper(fmt=_HUMAN_TIME if use_console else "iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        redact_secrets,
    ]
    if use_console:
        colours = _colours()
        renderer = structlog.dev.ConsoleRenderer(colors=colours, pad_event=22,
                                                 sort_keys=False)
        processors = shared + [humanize_epoch_ns, *([colour_pnl] if colours else []),
                               structlog.processors.format_exc_info, renderer]
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


def _colours() -> bool:
    """Colour only on a terminal (a file or a pipe gets no escape codes)."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


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
