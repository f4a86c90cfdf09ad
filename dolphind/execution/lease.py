"""One account, one trader (SPEC §5): a lease on the state bus keyed by the account.

The key is a hash of the API key (``account_id``), never the key. The holder renews the lease
every ``renew_s``; it lapses ``ttl_s`` after the last renewal. A second daemon (or a second venue
in the same process) that finds a live lease owned by someone else is *fenced*: it refuses to
send or cancel orders and says who holds the account, until the lease lapses or is released.

The lease is conservative about its own state: it counts as held only until the expiry it last
wrote, so a holder that cannot renew (a bus outage, a stalled loop) stops trading on its own
before anyone else may take over.

The state bus has no compare-and-set; acquisition writes, then reads back and keeps the lease
only when the read-back names this owner. That is exact on the in-process bus; on a remote bus
two writers racing within one round trip could both believe they won for one renewal period,
after which the later write wins. A bus that offers ``put_if_absent`` style atomics should get
an adapter method for it (noted in the Hazelcast adapter's to-do).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import socket
import time
from typing import Any, Callable

import structlog

from dolphind.statebus.base import StateBus

log = structlog.get_logger("dolphind.execution.lease")

LEASES = "DOLPHIN_LEASES"


def account_id(venue: str, api_key: str) -> str:
    """A stable, non-secret name for the account behind ``api_key``."""
    return f"{venue}:{hashlib.sha256(api_key.encode()).hexdigest()[:16]}"


class AccountLease:
    def __init__(self, bus: StateBus, account: str, ttl_s: Callable[[], float],
                 owner: str | None = None, wall: Callable[[], float] = time.time,
                 on_change: Callable[[bool], None] | None = None) -> None:
        self.bus = bus
        self.account = account
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._ttl_s = ttl_s
        self._wall = wall
        self._on_change = on_change or (lambda held: None)
        self._held = False
        self._expires_at = 0.0
        self.holder: dict[str, Any] | None = None
        self.reason = "lease not acquired yet"
        self.acquired_at: float | None = None

    @property
    def held(self) -> bool:
        return self._held and self._wall() < self._expires_at

    def try_acquire(self) -> bool:
        """Acquire or renew; False (with ``reason``) when another owner holds a live lease."""
        now = self._wall()
        cur = self.bus.get(LEASES, self.account)
        if isinstance(cur, dict) and cur.get("owner") != self.owner \
                and float(cur.get("expires_at", 0)) > now:
            self.holder = cur
            self.reason = (f"account {self.account} is held by {cur.get('owner')} "
                           f"(lease renewed {now - float(cur.get('renewed_at', now)):.1f}s ago, "
                           f"expires in {float(cur['expires_at']) - now:.1f}s)")
            self._set(False)
            return False
        if not self._held:
            self.acquired_at = now
        expires = now + self._ttl_s()
        record = {"owner": self.owner, "account": self.account, "pid": os.getpid(),
                  "host": socket.gethostname(), "acquired_at": self.acquired_at or now,
                  "renewed_at": now, "expires_at": expires}
        self.bus.put(LEASES, self.account, record)
        back = self.bus.get(LEASES, self.account)
        if not isinstance(back, dict) or back.get("owner") != self.owner:
            self.holder = back if isinstance(back, dict) else None
            self.reason = (f"account {self.account}: lease write not confirmed by the state bus"
                           if back is None else
                           f"account {self.account} is held by {back.get('owner')}")
            self._set(False)
            return False
        self._expires_at = expires
        self.holder = record
        self.reason = ""
        self._set(True)
        return True

    def _set(self, held: bool) -> None:
        if held != self._held:
            self._held = held
            if held:
                log.info("lease.acquired", account=self.account, owner=self.owner)
            else:
                self._expires_at = 0.0
                log.error("lease.fenced", account=self.account, owner=self.owner,
                          reason=self.reason)
            self._on_change(held)

    def release(self) -> None:
        """Give the account up now (a clean stop), so a successor need not wait for the TTL."""
        if self._held:
            cur = self.bus.get(LEASES, self.account)
            if isinstance(cur, dict) and cur.get("owner") == self.owner:
                self.bus.put(LEASES, self.account, {**cur, "expires_at": 0.0,
                                                     "released_at": self._wall()})
            self._held = False
            self._expires_at = 0.0
            self.reason = "released"
            log.info("lease.released", account=self.account, owner=self.owner)

    async def run(self, renew_s: Callable[[], float]) -> None:
        """Renew (or keep trying to acquire) until cancelled."""
        while True:
            self.try_acquire()
            await asyncio.sleep(renew_s())

    def status(self) -> dict[str, Any]:
        h = self.holder or {}
        return {"account": self.account, "owner": self.owner, "held": self.held,
                "reason": self.reason if not self.held else "",
                "holder": h.get("owner"), "expires_at": h.get("expires_at")}
