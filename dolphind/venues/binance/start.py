"""The calls a start needs (clock, filters, lease, account setup), and one line for the
operator when the venue refuses us."""

from __future__ import annotations

import asyncio

import structlog

from dolphind.backoff import backoff_delay
from dolphind.config import BinanceVenueConfig
from dolphind.venues.binance.account import Account
from dolphind.venues.binance.credentials import Redactor
from dolphind.venues.binance.filters import VenueFilters
from dolphind.venues.binance.lease import Lease
from dolphind.venues.binance.rest import NOT_ANSWERED, BinanceAPIError, RestClient
from dolphind.venues.venue import VenueStartupError

log = structlog.get_logger("dolphind.venues.binance")

# Start-up calls: a network error is retried this many times (with back-off) before giving up.
START_ATTEMPTS = 4


async def start_calls(cfg: BinanceVenueConfig, rest: RestClient, filters: VenueFilters,
                      account: Account, lease: Lease, redact: Redactor) -> None:
    """Clock, filters, lease, account setup. A network error (no answer) is retried with
    back-off ``START_ATTEMPTS`` times, each said in the log; then, and for any answer that
    refuses us (-2015 key, -1022 signature, hedge mode...), VenueStartupError: one line for
    the operator, exit 2."""
    base = rest.base
    for attempt in range(START_ATTEMPTS):
        try:
            await rest.sync_clock("start")
            await filters.refresh()
            if await lease.acquire():
                await account.setup()
            else:
                log.error("venue.fenced", account=lease.account, reason=lease.reason)
            return
        except NOT_ANSWERED as exc:
            if attempt + 1 >= START_ATTEMPTS:
                raise VenueStartupError(
                    f"venue REST {base} unreachable after {START_ATTEMPTS} attempts: "
                    f"{redact(str(exc))}") from None
            delay = backoff_delay(attempt, cfg.backoff_initial_s, cfg.backoff_max_s)
            log.warning("venue.start_retry", rest=base, attempt=attempt + 1,
                        of=START_ATTEMPTS, retry_in_s=round(delay, 3),
                        error=redact(str(exc)))
            await asyncio.sleep(delay)
        except BinanceAPIError as exc:
            raise VenueStartupError(start_refusal(exc, base)) from None


def start_refusal(exc: BinanceAPIError, base: str) -> str:
    """One line for an answer that refuses us at start."""
    if exc.code in (-2014, -2015):
        why = "the API key is refused (invalid key, IP not whitelisted or no futures permission)"
    elif exc.code == -1022:
        why = "the signature is refused (wrong API secret)"
    elif exc.banned:
        why = "this IP is banned (418)"
    else:
        why = "the venue refused the start-up request"
    return f"venue {base}: {why}: binance http {exc.status} code {exc.code}: {exc.msg[:120]}"
