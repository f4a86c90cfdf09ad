"""One account, one trader (SPEC §5): an exclusive lease keyed by the account.

The account is named by a hash of the API key (``account_id``), never the key. A daemon that
does not hold the lease is *fenced*: it refuses to send or cancel orders and says who holds the
account (``reason``, in /status, /readyz and the log), until it can take the lease over.

Design (the simplest one that is honest about what it fences):

- **Host lock, always.** ``HostLease`` holds an exclusive ``flock`` on
  ``<execution.binance.lease_dir>/<account>.lock`` (default ``/run/lock/dolphind``, the
  host's lock directory; every daemon on the host must use the same directory). ``flock``
  excludes per open file description, so it fences a second daemon process *and* a second
  venue in the same process. The kernel drops the lock when the holder's file is closed,
  including on a crash or ``kill -9``: there is no stale lease and no TTL to wait out. The
  file is never unlinked (unlinking a lock file races with a new locker); the holder writes
  its name into it so a fenced daemon can say who holds the account. Every renewal checks
  that the path still names the locked file (someone deleting the directory would otherwise
  let a second daemon lock a new file): if not, the lease is dropped and re-taken.
  A lease directory that cannot be created or opened fences the daemon (fail closed).
- **State-bus lease, only with a shared bus.** ``AccountLease`` (below) writes a renewed,
  expiring record on the state bus. It is used in addition to the host lock when the bus is
  shared between hosts (any bus whose ``name`` is not ``"memory"``, i.e. Hazelcast): the
  embedded in-process bus fences nothing the host lock does not already fence. The bus has no
  compare-and-set; acquisition writes, then reads back and keeps the lease only when the
  read-back names this owner. That is exact on one bus node; on a remote bus two writers racing
  within one round trip could both believe they won for one renewal period, after which the
  later write wins (a ``put_if_absent`` adapter method would close that). The bus lease counts
  as held only until the expiry it last wrote, so a holder that cannot renew stops trading on
  its own before anyone else may take over.

- **CP FencedLock, with the Hazelcast bus.** ``FencedLease`` (below) replaces the record
  lease when the bus is a Hazelcast cluster (``statebus.kind = "hazelcast"``): the account is
  a CP ``FencedLock`` named ``dolphind-account:<account>``, taken with ``try_lock`` (never
  waits). Its fence (a number that only grows across holders) is the lease's token: the
  venue stamps every order it sends with it (``Lease.fence_for``, logged with the client
  id), and refuses to send without one. The lock belongs to the holder's CP session: when
  the holder dies (``kill -9``, a lost host) the cluster frees it once the session's TTL
  (member config ``session-time-to-live-seconds``) runs out, and the next daemon takes over
  (then reconciles with the venue before any entry, as on any takeover). A holder that
  cannot confirm its ownership (cluster unreachable, session expired) counts the lease as
  held only ``lease_ttl_s`` after its last confirmation, so it stops sending before the
  cluster can give the lock away, provided ``lease_ttl_s`` < the session TTL minus one
  session heartbeat (docs/statebus.md). With 3+ CP members the lock is linearizable (Raft);
  on a cluster without CP members Hazelcast runs it in "unsafe mode" (one partition owner,
  no Raft): usable on one member, not a guarantee across a split brain.

``Lease`` combines the two: held while both parts are held. Its file work runs in a worker
thread (``flock`` is taken with ``LOCK_NB``: it never waits).

The fenced lock's calls run in one task the lease owns (the lock belongs to the task that
took it), started with ``dolphind.stage.start_watched``. If that task ever crashes, the crash
is logged, handed to ``on_crash`` (the venue counts it as its ``lease_lock`` loop's) and the
lease is lost to this process for good: the lock now belongs to a task that is gone, so
``held`` turns false at once and every later ``acquire`` raises ``LeaseLockCrashed`` (the
renewal loop crashes, the supervisor counts it and ends the process on a crash loop; the next
process starts with a new CP session and takes the account back).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import math
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable

import orjson

import structlog

from dolphind.stage import start_watched
from dolphind.statebus.base import StateBus
from dolphind.statebus.hazelcast import HazelcastStateBus

log = structlog.get_logger("dolphind.venues.binance.lease")

LEASES = "DOLPHIN_LEASES"


def account_id(venue: str, api_key: str) -> str:
    """A stable, non-secret name for the account behind ``api_key``."""
    return f"{venue}:{hashlib.sha256(api_key.encode()).hexdigest()[:16]}"


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class LeaseLockCrashed(Exception):
    """The fenced lock's owner task crashed: the lock cannot be confirmed or given up by this
    process any more (its CP session's end frees it)."""


def lock_path(directory: Path, account: str) -> Path:
    return directory / (account.replace(":", "-") + ".lock")


class HostLease:
    """An exclusive ``flock`` on the account's lock file (see the module docstring).

    ``try_acquire`` and ``release`` do file I/O: call them from a worker thread."""

    def __init__(self, directory: Path, account: str, owner: str,
                 wall: Callable[[], float] = time.time) -> None:
        self.path = lock_path(Path(directory), account)
        self.account = account
        self.owner = owner
        self._wall = wall
        self._fd: int | None = None
        self.holder: dict[str, Any] | None = None
        self.reason = "lease not acquired yet"
        self.acquired_at: float | None = None
        # Serialises the worker threads (a cancelled acquire's thread may still be running
        # when release is called).
        self._mutex = threading.Lock()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        with self._mutex:
            return self._try_acquire()

    def _try_acquire(self) -> bool:
        if self._fd is not None:
            if self._still_ours():
                return True
            log.error("lease.lock_file_lost", account=self.account, path=str(self.path))
            self._close()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            self.holder = None
            self.reason = (f"account {self.account}: cannot open the lease file {self.path} "
                           f"({exc.strerror or type(exc).__name__}); refusing to trade")
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            try:
                raw = os.pread(fd, 4096, 0)
            except OSError:
                raw = b""
            os.close(fd)
            try:
                cur = orjson.loads(raw) if raw.strip() else None
            except orjson.JSONDecodeError:
                cur = None
            self.holder = cur if isinstance(cur, dict) else None
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = (self.holder or {}).get("owner") or "another process"
                self.reason = (f"account {self.account} is held by {who} "
                               f"(lock {self.path})")
            else:
                self.reason = (f"account {self.account}: cannot lock {self.path} "
                               f"({exc.strerror or type(exc).__name__}); refusing to trade")
            return False
        self._fd = fd
        if not self._still_ours():  # replaced between open and lock: try again next time
            self._close()
            self.reason = f"account {self.account}: lease file {self.path} was replaced"
            return False
        now = self._wall()
        self.acquired_at = now
        self.holder = {"owner": self.owner, "account": self.account, "pid": os.getpid(),
                       "host": socket.gethostname(), "acquired_at": now}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, orjson.dumps(self.holder) + b"\n", 0)
        except OSError:
            pass  # the lock is what counts; the name in it is only for the fenced
        self.reason = ""
        return True

    def _still_ours(self) -> bool:
        assert self._fd is not None
        try:
            a, b = os.fstat(self._fd), os.stat(self.path)
        except OSError:
            return False
        return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor drops the flock

    def release(self) -> None:
        with self._mutex:
            if self._fd is not None:
                self._close()
                self.reason = "released"


class AccountLease:
    """The state-bus lease: a renewed, expiring record (see the module docstring)."""

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

    def status(self) -> dict[str, Any]:
        h = self.holder or {}
        return {"account": self.account, "owner": self.owner, "held": self.held,
                "reason": self.reason if not self.held else "",
                "holder": h.get("owner"), "expires_at": h.get("expires_at")}


class FencedLease:
    """The account as a Hazelcast CP FencedLock (see the module docstring).

    The lock is owned by the task that takes it (hazelcast-python-client's asyncio API keys
    a lock's owner by task), so every lock call runs in this lease's own task; ``try_acquire``
    and ``release`` hand it a request and wait for the answer (bounded)."""

    def __init__(self, bus: HazelcastStateBus, account: str, owner: str,
                 ttl_s: Callable[[], float],
                 wall: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic,
                 on_crash: Callable[[BaseException], None] | None = None) -> None:
        self.bus = bus
        self.account = account
        self.owner = owner
        self.name = f"dolphind-account:{account}"
        self._ttl_s = ttl_s
        self._wall = wall
        self._mono = mono
        self.fence = 0  # FencedLock.INVALID_FENCE: not held
        self._confirmed_at = -math.inf
        self._client: Any = None  # the client the fence was taken with
        self.holder: dict[str, Any] | None = None
        self.reason = "lease not acquired yet"
        self.acquired_at: float | None = None
        self._requests: asyncio.Queue[tuple[str, asyncio.Future[bool]]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: dict[str, asyncio.Future[bool]] = {}
        self._on_crash = on_crash or (lambda exc: None)
        self.crashed: BaseException | None = None  # the owner task's crash (see the module)

    @property
    def held(self) -> bool:
        return self.fence != 0 and self._mono() - self._confirmed_at < self._ttl_s()

    def _timeout(self) -> float:
        return self.bus.invocation_timeout_s

    async def _call(self, what: str) -> bool:
        if self.crashed is not None:
            raise self._crash_error()
        if self._task is None or self._task.done():
            self._requests, self._pending = asyncio.Queue(), {}
            self._task = start_watched(self._owner(), f"lease:{self.account}",
                                       on_crash=self._owner_crashed)
        assert self._requests is not None
        fut = self._pending.get(what)
        if fut is None or fut.done():  # one request of a kind at a time: no queue builds up
            fut = self._pending[what] = asyncio.get_running_loop().create_future()
            self._requests.put_nowait((what, fut))
        try:
            async with asyncio.timeout(3 * self._timeout() + 1):
                return await asyncio.shield(fut)
        except TimeoutError:
            self.reason = f"account {self.account}: the CP lock did not answer in time"
            return self.held

    async def try_acquire(self) -> bool:
        """Take the lock, or confirm we still own it; False (with ``reason``) otherwise."""
        return await self._call("acquire")

    async def release(self) -> None:
        task = self._task
        if task is not None and not task.done():
            try:
                await self._call("release")
            except LeaseLockCrashed:
                pass  # seen already (logged, counted, in reason): nothing left to give up
            task.cancel()
            await asyncio.wait([task])  # it ends by the cancel (a crash was seen when it came)
        self._task = None

    def _owner_crashed(self, exc: BaseException) -> None:
        """The owner task crashed (``start_watched`` has logged it): the lock is lost."""
        self.crashed = exc
        self.fence = 0  # held is false from now on: nothing may be sent
        self.reason = str(self._crash_error())
        for fut in self._pending.values():  # a caller waiting for an answer hears it now
            if not fut.done():
                fut.set_exception(self._crash_error())
                fut.exception()  # also when nobody awaits it any more (a timed-out caller)
        self._on_crash(exc)

    def _crash_error(self) -> LeaseLockCrashed:
        exc = self.crashed
        return LeaseLockCrashed(
            f"account {self.account}: the CP lock's owner task crashed "
            f"({type(exc).__name__}: {exc}); the lock is lost to this process until it "
            "restarts")

    async def _owner(self) -> None:
        assert self._requests is not None
        while True:
            what, fut = await self._requests.get()
            try:
                async with asyncio.timeout(self._timeout() * 2):
                    ok = await (self._unlock() if what == "release" else self._acquire())
            except Exception as exc:  # noqa: BLE001 - the cluster's failure fences, never crashes
                self.reason = (f"account {self.account}: cannot reach the CP lock "
                               f"({type(exc).__name__}: {exc}); held only until the last "
                               "confirmation expires")
                ok = self.held
            if not fut.done():
                fut.set_result(ok)

    async def _acquire(self) -> bool:
        from hazelcast.errors import LockOwnershipLostError, SessionExpiredError

        client = self.bus.client
        if client is None:
            self.reason = (f"account {self.account}: the state bus is not connected; the "
                           "account lock cannot be confirmed")
            return self.held
        if client is not self._client and self.fence:
            # A new client is a new CP session: the old one's lock is not ours any more.
            log.error("lease.session_replaced", account=self.account, fence=self.fence)
            self.fence = 0
        self._client = client
        lock = await client.cp_subsystem.get_lock(self.name)
        if self.fence:
            try:
                mine = await lock.is_locked_by_current_task()
            except (LockOwnershipLostError, SessionExpiredError):
                mine = False
            if mine:
                self._confirmed_at = self._mono()
                return True
            log.error("lease.lock_lost", account=self.account, fence=self.fence)
            self.fence = 0
        fence = await lock.try_lock()
        if fence:
            self.fence = int(fence)
            self._confirmed_at = self._mono()
            now = self._wall()
            self.acquired_at = now
            self.holder = {"owner": self.owner, "account": self.account, "pid": os.getpid(),
                           "host": socket.gethostname(), "fence": self.fence,
                           "acquired_at": now}
            leases = await client.get_map(LEASES)
            await leases.set(self.account, orjson.dumps(self.holder).decode())
            self.reason = ""
            log.info("lease.fenced_lock_acquired", account=self.account, fence=self.fence)
            return True
        leases = await client.get_map(LEASES)
        raw = await leases.get(self.account)
        try:
            cur = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            cur = None
        self.holder = cur if isinstance(cur, dict) else None
        who = (self.holder or {}).get("owner") or "another daemon"
        self.reason = (f"account {self.account} is held by {who} (CP lock {self.name}, "
                       f"fence {(self.holder or {}).get('fence')})")
        return False

    async def _unlock(self) -> bool:
        client = self.bus.client
        if self.fence and client is not None and client is self._client:
            lock = await client.cp_subsystem.get_lock(self.name)
            with contextlib.suppress(Exception):  # lost already: nothing to give up
                await lock.unlock()
        self.fence = 0
        self.reason = "released"
        return False

    def status(self) -> dict[str, Any]:
        h = self.holder or {}
        return {"account": self.account, "owner": self.owner, "held": self.held,
                "reason": self.reason if not self.held else "", "holder": h.get("owner"),
                "fence": self.fence or None}


class Lease:
    """The venue's lease: the host lock, plus the state-bus lease when ``bus`` is shared.

    ``held`` is cheap and never blocks (read it anywhere); ``acquire`` (take or renew) and
    ``release`` are coroutines that do their file work in a worker thread."""

    def __init__(self, account: str, lease_dir: Path, bus: StateBus | None,
                 ttl_s: Callable[[], float], wall: Callable[[], float] = time.time,
                 on_change: Callable[[bool], None] | None = None,
                 owner: str | None = None,
                 on_crash: Callable[[BaseException], None] | None = None) -> None:
        """``on_crash``: the fenced lock's owner task crashed (see the module docstring)."""
        self.account = account
        self.owner = owner or new_owner()
        self.host = HostLease(lease_dir, account, self.owner, wall)
        shared = bus is not None and bus.name != "memory"
        self.bus: AccountLease | FencedLease | None = None
        if isinstance(bus, HazelcastStateBus):  # the cluster has a real lock: use it
            self.bus = FencedLease(bus, account, self.owner, ttl_s, wall=wall,
                                   on_crash=on_crash)
        elif shared and bus is not None:
            self.bus = AccountLease(bus, account, ttl_s, owner=self.owner, wall=wall)
        self._on_change = on_change or (lambda held: None)
        self._was_held = False
        self._lock = asyncio.Lock()

    @property
    def kind(self) -> str:
        if isinstance(self.bus, FencedLease):
            return "host_lock+cp_fenced_lock"
        return "host_lock+state_bus" if self.bus is not None else "host_lock"

    @property
    def fence(self) -> int | None:
        """The fencing token of the lock held (CP FencedLock), else None."""
        return self.bus.fence or None if isinstance(self.bus, FencedLease) else None

    def fence_for(self, client_id: str) -> int | None:
        """Stamp an order about to be sent: its fencing token (0 without a fenced lock), or
        None when the lease is not held (a stale holder: the order must not be sent)."""
        if not self.held:
            return None
        fence = self.fence or 0
        if fence:
            log.info("lease.order_fence", client_id=client_id, fence=fence,
                     account=self.account)
        return fence

    @property
    def held(self) -> bool:
        return self.host.held and (self.bus is None or self.bus.held)

    @property
    def reason(self) -> str:
        if not self.host.held:
            return self.host.reason
        if self.bus is not None and not self.bus.held:
            return self.bus.reason
        return ""

    @property
    def holder(self) -> dict[str, Any] | None:
        if not self.host.held or self.bus is None:
            return self.host.holder
        return self.bus.holder

    async def acquire(self) -> bool:
        """Take the lease, or renew it (the host lock is re-verified; the bus record renewed)."""
        async with self._lock:
            try:
                host = await asyncio.to_thread(self.host.try_acquire)
                if host and isinstance(self.bus, FencedLease):
                    await self.bus.try_acquire()  # raises LeaseLockCrashed once it crashed
                elif host and self.bus is not None:
                    self.bus.try_acquire()
            finally:
                self._changed()  # a loss is told to the venue even when the call raised
            return self.held

    async def release(self) -> None:
        """Give the account up now (a clean stop): a successor need not wait."""
        async with self._lock:
            was = self.held
            if isinstance(self.bus, FencedLease):
                await self.bus.release()
            elif self.bus is not None:
                self.bus.release()
            await asyncio.to_thread(self.host.release)
            self._was_held = False
            if was:
                log.info("lease.released", account=self.account, owner=self.owner)

    def _changed(self) -> None:
        held = self.held
        if held == self._was_held:
            return
        self._was_held = held
        if held:
            log.info("lease.acquired", account=self.account, owner=self.owner, kind=self.kind,
                     lock_file=str(self.host.path))
        else:
            log.error("lease.fenced", account=self.account, owner=self.owner,
                      reason=self.reason)
        self._on_change(held)

    def status(self) -> dict[str, Any]:
        h = self.holder or {}
        held = self.held
        return {"account": self.account, "owner": self.owner, "held": held,
                "reason": "" if held else self.reason, "holder": h.get("owner"),
                "holder_pid": h.get("pid"), "kind": self.kind,
                "lock_file": str(self.host.path),
                "fence": self.fence,
                "expires_at": self.bus.holder.get("expires_at")
                if self.bus is not None and self.bus.holder else None}
