"""The state bus on a Hazelcast cluster (bible §15), through hazelcast-python-client's asyncio
API (``hazelcast.asyncio``, client 5.6+), on the daemon's own event loop.

Why it can never block or fail trading:

- ``put`` encodes the value, keeps it in a local copy and marks the key dirty; that is all
  the caller's thread does. One writer loop pushes the dirty keys (the latest value of each:
  a slow cluster makes the bus skip intermediate values, never queue them) with ``Map.set``,
  bounded by ``invocation_timeout_s``; a failed push is retried after ``backoff_delay``.
- ``get`` reads the local copy: the value this daemon wrote, or the last one an entry
  listener delivered (inputs). During an outage it is the last value known.
- The bus's loops (connector, writer, recovery) are stages (``stages()``) that the daemon
  runs under supervision, from before the pipeline opens until after it has closed: a crash
  is counted and the loop restarted, a crash loop ends the daemon (``dolphind.stage``).
- The client connects in the background (``async_start``): start-up does not wait for the
  cluster. Until it is connected, and after ``breaker_failures`` consecutive failed pushes or
  a DISCONNECTED event, the breaker is open (bible §15.6): file-only mode, the latest values
  are written as ``<file_dir>/<MAP>/<key>.json`` (in a worker thread), and recovery retries
  with exponential back-off. The first successful push closes the breaker and republishes
  every value this daemon owns, then re-reads the inputs (an update sent while we were away
  is not replayed by a listener).

Inputs (``exf_latest``, ``acb_boost``, ``acb_w750_threshold``) arrive by entry listeners,
not polling. A payload that is not JSON is rejected at the bus: counted, logged once, shown
in ``status()``, and the last good value stays in force; a JSON payload with a bad shape is
rejected by its consumer (alpha/inputs.py), which shows it in /status likewise.

Values are JSON text (``str``) on the cluster, as the bible's other readers expect
(``json.loads(value)``). The daemon's own keys are prefixed with ``namespace`` (see
``remote_key``) so that two daemons on one cluster do not overwrite each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Awaitable, Callable

import orjson
import structlog

from dolphind.backoff import Backoff, Limits, backoff_delay, jittered
from dolphind.statebus.base import FEATURES, HEARTBEAT, META_HEALTH, PNL, SAFETY, STATE
from dolphind.statebus.breaker import Breaker

log = structlog.get_logger("dolphind.statebus")

# Maps whose keys belong to one daemon (its posture, PnL, state, health, heartbeat): prefixed
# with the namespace on the cluster. The rest (scan, book, inputs) is market-wide or shared.
INSTANCE_MAPS = frozenset({SAFETY, PNL, STATE, META_HEALTH, HEARTBEAT})
# The writer pushes at most this often (the loop's CPU for the bus is per flush, not per put).
FLUSH_S = 0.02
# Maps whose proxies are made on (re)connection: the client logs an unretrieved error when
# a proxy's creation fails, so none is made lazily during an outage if it can be helped.
KNOWN_MAPS = (FEATURES, SAFETY, PNL, STATE, META_HEALTH, HEARTBEAT,
              *(f"DOLPHIN_FEATURES_SHARD_{i:02d}" for i in range(10)))
# Inputs written by other processes and read here by entry listeners.
INPUT_KEYS = ((FEATURES, "exf_latest"), (FEATURES, "acb_boost"),
              (FEATURES, "acb_w750_threshold"))
# The counters the bus keeps (exported as dolphind_statebus_events_total{event}).
EVENTS = ("connect_failed", "push_ok", "push_failed", "breaker_opened", "breaker_closed", "file_writes",
          "file_write_failed", "republished", "connected", "disconnected", "input_accepted",
          "input_rejected", "rejected")


def remote_key(namespace: str, map_name: str, key: str) -> str:
    """The key on the cluster: ``<namespace>:<key>`` for this daemon's own maps."""
    return f"{namespace}:{key}" if namespace and map_name in INSTANCE_MAPS else key


def file_name(key: str) -> str:
    """A key as a file name (keys may hold ':' or '/')."""
    return "".join(c if c.isalnum() or c in "-_.:" else "_" for c in key) + ".json"


def write_latest(directory: Path, items: dict[tuple[str, str], bytes]) -> int:
    """File-only mode: each value to <directory>/<MAP>/<key>.json, atomically (blocking)."""
    for (map_name, key), raw in items.items():
        folder = directory / map_name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / file_name(key)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_bytes(raw)
        os.replace(tmp, path)
    return len(items)


def client_options(cfg: Any, environ: dict[str, str] | os._Environ[str] = os.environ,
                   resolve: Callable[[str], Path] = Path) -> dict[str, Any]:
    """hazelcast-python-client options from [statebus] and the environment (credentials)."""
    opts: dict[str, Any] = {
        "cluster_name": cfg.cluster_name,
        "cluster_members": list(cfg.members),
        "async_start": True,  # start-up never waits for the cluster
        "reconnect_mode": "ON",
        # The client's own (re)connection attempts give up after this; the bus then makes a
        # new client (HazelcastStateBus._connector): an outage of any length is survived.
        "cluster_connect_timeout": max(5.0, 3 * cfg.reconnect_max_s),
        "retry_initial_backoff": cfg.reconnect_initial_s,
        "retry_max_backoff": cfg.reconnect_max_s,
        "retry_multiplier": 2.0,
        "retry_jitter": 0.2,
        "connection_timeout": max(1.0, cfg.invocation_timeout_s),
        "invocation_timeout": cfg.invocation_timeout_s,
        "statistics_enabled": False,
    }
    user, password = environ.get("DOLPHIND_HAZELCAST_USERNAME"), \
        environ.get("DOLPHIND_HAZELCAST_PASSWORD")
    if user:
        opts["creds_username"] = user
        opts["creds_password"] = password or ""
    if cfg.tls:
        opts["ssl_enabled"] = True
        if cfg.ca_file:
            opts["ssl_cafile"] = str(resolve(cfg.ca_file))
        if cfg.cert_file:
            opts["ssl_certfile"] = str(resolve(cfg.cert_file))
            opts["ssl_keyfile"] = str(resolve(cfg.key_file))
    return opts


class BusLoop:
    """One loop of the bus as a stage the daemon supervises (``dolphind.stage.Stage``)."""

    is_source = False  # a background loop: cancelled after the pipeline has drained
    output = None  # no stage reads from it

    def __init__(self, loop: str, body: Callable[[], Awaitable[None]]) -> None:
        self.name = f"statebus:{loop}"
        self._body = body

    async def run(self) -> None:
        await self._body()


class HazelcastStateBus:
    """The StateBus protocol (base.py) on a Hazelcast cluster; see the module docstring."""

    name = "hazelcast"
    EVENTS = EVENTS

    def __init__(self, cfg: Any, file_dir: Path, options: dict[str, Any],
                 on_event: Callable[[str], None] | None = None,
                 on_write: Callable[[str], None] | None = None) -> None:
        """``on_event(event)``: each of EVENTS as it happens; ``on_write(outcome)``: every
        ``put`` ("ok" or "rejected"), as the memory bus reports it."""
        self._cfg = cfg
        self.file_dir = file_dir
        self._options = options
        self._on_event = on_event or (lambda event: None)
        self._on_write = on_write or (lambda outcome: None)
        self.namespace: str = cfg.namespace
        self.invocation_timeout_s: float = cfg.invocation_timeout_s
        self._local: dict[tuple[str, str], bytes] = {}
        self._owned: dict[tuple[str, str], bytes] = {}  # what this daemon wrote (republish)
        self._dirty: dict[tuple[str, str], bytes] = {}
        self.breaker = Breaker(cfg.breaker_failures, cfg.reconnect_initial_s,
                               cfg.reconnect_max_s)
        self.counts = dict.fromkeys(EVENTS, 0)
        self.input_problems: dict[str, str] = {}
        self.client: Any = None
        self._maps: dict[str, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None  # the loops' (see _on_loop)
        self._loop_thread = 0
        # Made here, bound to the loop at their first wait (no loop is needed to make them).
        self._wake = asyncio.Event()  # the writer: something is dirty
        self._recover = asyncio.Event()  # the recovery: the breaker may close now
        self._client_gone = asyncio.Event()  # the connector: make a new client
        self._connected = False
        self._listening = False
        self._closing = False
        self.last_error = "not connected yet"

    # ---- the StateBus protocol (any thread; never blocks, never raises) ------------------

    def put(self, map_name: str, key: str, value: Any) -> None:
        try:
            raw = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
        except TypeError:
            self._count("rejected")  # a writer bug must not reach the trading loop
            self._on_write("rejected")
            return
        self._on_write("ok")
        k = (map_name, key)
        self._local[k] = raw
        self._owned[k] = raw
        self._dirty[k] = raw
        self._kick()

    def get(self, map_name: str, key: str) -> Any | None:
        raw = self._local.get((map_name, key))
        return None if raw is None else orjson.loads(raw)

    def keys(self, map_name: str) -> list[str]:
        return sorted(k for m, k in self._local if m == map_name)

    def healthy(self) -> bool:
        return not self.breaker.open

    # ---- lifecycle ------------------------------------------------------------------------

    def stages(self) -> list[BusLoop]:
        """The bus's loops, for the daemon to run under supervision from before the pipeline
        opens until after it has closed (``dolphind.stage.StageOwner``): the connector (owns
        the client, connects in the background: start-up never waits for the cluster), the
        writer (pushes the dirty keys, or writes the files while the breaker is open) and the
        recovery (closes the breaker). A crash is counted and the loop restarted by the
        supervisor, or the daemon ended on a crash loop; the bus keeps its state between
        runs (what a crashed writer had taken is pushed again)."""
        return [BusLoop("connector", self._connector), BusLoop("writer", self._writer),
                BusLoop("recovery", self._recovery)]

    async def close(self) -> None:
        """Shut the client down; after the loops have stopped."""
        self._closing = True  # the client's own DISCONNECTED on shutdown is no outage
        if self.client is not None:
            client, self.client = self.client, None
            try:
                async with asyncio.timeout(5):
                    await client.shutdown()
            except (TimeoutError, Exception) as exc:  # never let a dying cluster hang a stop
                log.warning("statebus.shutdown_failed", error=_describe(exc))

    def _on_loop(self) -> None:
        """The loop the bus's loops run on: ``put`` from another thread wakes the writer
        there. Called by each loop as it starts (the first one binds)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()

    # ---- internals ------------------------------------------------------------------------

    def _count(self, event: str, n: int = 1) -> None:
        self.counts[event] += n
        for _ in range(n):
            self._on_event(event)

    def _kick(self) -> None:
        if self._loop is None:  # no loop runs yet: the writer pushes what is dirty as it starts
            return
        if threading.get_ident() == self._loop_thread:
            self._wake.set()
        else:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def _connector(self) -> None:
        """Owns the client: (re)creates it whenever it is gone. The client's own connect
        attempts are bounded (``cluster_connect_timeout``): after that it gives up and shuts
        down, and this loop makes a new one after a back-off (inside the client's bound, it
        reconnects by itself with its own back-off)."""
        self._on_loop()
        with warnings.catch_warnings():  # the package imports asyncore (deprecated) as well
            warnings.simplefilter("ignore", DeprecationWarning)
            from hazelcast.asyncio import HazelcastClient  # imported only when it is used

        # The client logs every failed connection attempt with a traceback; the bus says what
        # matters itself (statebus.connect_failed / breaker_open / connected), once per change.
        logging.getLogger("hazelcast").setLevel(logging.ERROR)
        if self.client is not None:  # a crashed run's client: a new run starts clean
            client, self.client, self._connected = self.client, None, False
            with contextlib.suppress(Exception):  # it is replaced whatever its state
                await client.shutdown()
        log.info("statebus.started", kind=self.name, members=list(self._cfg.members),
                 cluster=self._cfg.cluster_name, namespace=self.namespace or None)
        backoff = Backoff(lambda: Limits(self._cfg.reconnect_initial_s, self._cfg.reconnect_max_s))
        while True:
            self._client_gone.clear()
            try:
                client = await HazelcastClient.create_and_start(
                    **self._options, lifecycle_listeners=[self._on_lifecycle])
            except Exception as exc:  # noqa: BLE001 - any failure: try again later
                self.last_error = f"cannot connect: {_describe(exc)}"
                self._count("connect_failed")
                delay = backoff.next()
                log.warning("statebus.connect_failed", error=self.last_error,
                            retry_in_s=round(delay, 2))
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            self.client, self._maps, self._listening = client, {}, False
            self._connected = True
            self._recover.set()
            await self._client_gone.wait()
            self.client, self._connected = None, False
            self._open("the client gave up on the cluster")

    def _on_lifecycle(self, state: str) -> None:
        if self._closing:
            return
        if state == "SHUTDOWN":
            self._client_gone.set()
        if state == "CONNECTED":
            self._connected = True
            self._count("connected")
            log.info("statebus.connected", cluster=self._cfg.cluster_name)
            self._recover.set()
        elif state == "DISCONNECTED":
            self._connected = False
            self._count("disconnected")
            self._open("the client lost the cluster")

    def _open(self, why: str) -> None:
        self.last_error = why
        if self.breaker.trip():
            self._count("breaker_opened")
            log.error("statebus.breaker_open", reason=why, mode="file-only",
                      file_dir=str(self.file_dir))
            # The files hold the latest of everything, not only what changes from now on.
            self._dirty.update(self._owned)
            self._kick()
        self._recover.set()

    async def _map(self, name: str) -> Any:
        m = self._maps.get(name)
        if m is None:
            m = self._maps[name] = await self.client.get_map(name)
        return m

    async def _push(self, items: dict[tuple[str, str], bytes]) -> None:
        """Write ``items`` to the cluster (raises on failure or timeout)."""
        if self.client is None:
            raise ConnectionError("no client")
        async def one(map_name: str, key: str, raw: bytes) -> None:
            text = raw.decode()
            await (await self._map(map_name)).set(remote_key(self.namespace, map_name, key),
                                                  text)
            if map_name == SAFETY and key == "latest" and self._cfg.cp_subsystem:
                ref = await self.client.cp_subsystem.get_atomic_reference(
                    remote_key(self.namespace, SAFETY, SAFETY))
                await ref.set(text)

        async with asyncio.timeout(self._cfg.invocation_timeout_s):
            await asyncio.gather(*(one(m, k, v) for (m, k), v in items.items()))

    async def _writer(self) -> None:
        self._on_loop()
        if self._dirty:  # put before the loop ran (or left by a crashed run): push it now
            self._wake.set()
        while True:
            await self._wake.wait()
            # Gather what else is written meanwhile: at most one push per FLUSH_S, whatever
            # the rate of puts (the latest value of each key is what counts). A batching
            # interval, not a retry: a failed push waits for backoff_delay (_write).
            await asyncio.sleep(FLUSH_S)
            self._wake.clear()
            if not self._dirty:
                continue
            batch, self._dirty = self._dirty, {}
            try:
                await self._write(batch)
            except BaseException:  # a crash or the stop: the batch stays dirty, none is lost
                for k, v in batch.items():
                    self._dirty.setdefault(k, v)  # unless a newer value came meanwhile
                raise

    async def _write(self, batch: dict[tuple[str, str], bytes]) -> None:
        """One batch to the cluster, or to the files while the breaker is open."""
        if self.breaker.open:
            await self._to_files(batch)
            return
        try:
            await self._push(batch)
        except Exception as exc:  # noqa: BLE001 - any failure counts against the breaker
            self._count("push_failed")
            for k, v in batch.items():
                self._dirty.setdefault(k, v)  # unless a newer value came meanwhile
            self.last_error = _describe(exc)
            if self.breaker.failure():
                self._open(f"{self.breaker.failures} pushes failed ({self.last_error})")
            else:
                # A retry of a failed push: the back-off schedule, from the breaker's count.
                await asyncio.sleep(backoff_delay(self.breaker.failures - 1,
                                                  self.breaker.initial_s, self.breaker.max_s))
                self._wake.set()
            return
        self._count("push_ok", len(batch))
        self.breaker.failures = 0

    async def _to_files(self, batch: dict[tuple[str, str], bytes]) -> None:
        try:
            n = await asyncio.to_thread(write_latest, self.file_dir, batch)
        except OSError as exc:
            self._count("file_write_failed")
            log.error("statebus.file_write_failed", dir=str(self.file_dir), error=_describe(exc))
            return
        self._count("file_writes", n)

    async def _recovery(self) -> None:
        """While the breaker is open: try to republish everything, backing off; on success
        close it, then (re)read the inputs and make sure the listeners are registered."""
        self._on_loop()
        while True:
            if not self.breaker.open:
                self._recover.clear()
                await self._recover.wait()
                continue
            if self._connected and self.client is not None:
                owned = dict(self._owned)
                try:
                    for name in KNOWN_MAPS:  # proxies made while the cluster answers
                        await self._map(name)
                    await self._push(owned)
                    await self._listen()
                    await self._refresh_inputs()
                except Exception as exc:  # noqa: BLE001
                    self.last_error = _describe(exc)
                    log.warning("statebus.recovery_failed", error=self.last_error)
                else:
                    for k in owned:
                        if self._dirty.get(k) == owned[k]:
                            del self._dirty[k]
                    self.breaker.success()
                    self.last_error = ""
                    self._count("breaker_closed")
                    self._count("republished", len(owned))
                    log.info("statebus.breaker_closed", republished=len(owned))
                    self._kick()
                    continue
            self._recover.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(jittered(self.breaker.next_delay())):
                    await self._recover.wait()

    async def _listen(self) -> None:
        """Entry listeners on the input keys (once: the client re-registers them itself)."""
        if self._listening:
            return
        m = await self._map(FEATURES)
        for _, key in INPUT_KEYS:
            await m.add_entry_listener(include_value=True, key=key,
                                       added_func=self._on_input, updated_func=self._on_input,
                                       removed_func=self._on_input_removed)
        self._listening = True

    async def _refresh_inputs(self) -> None:
        m = await self._map(FEATURES)
        for map_name, key in INPUT_KEYS:
            value = await m.get(key)
            if value is not None:
                self._accept_input(map_name, key, value)

    def _on_input(self, event: Any) -> None:
        self._accept_input(FEATURES, event.key, event.value)

    def _on_input_removed(self, event: Any) -> None:
        self._local.pop((FEATURES, event.key), None)

    def _accept_input(self, map_name: str, key: str, value: Any) -> None:
        """The listener's payload into the local copy, if it is JSON (else rejected)."""
        try:
            if isinstance(value, (bytes, bytearray, str)):
                raw = value.encode() if isinstance(value, str) else bytes(value)
                orjson.loads(raw)
            else:  # a member wrote a number or the like: store it as its JSON
                raw = orjson.dumps(value)
        except (orjson.JSONDecodeError, TypeError) as exc:
            problem = f"{map_name}/{key}: not JSON ({exc}); keeping the last good value"
            if self.input_problems.get(key) != problem:
                log.error("statebus.input_rejected", map=map_name, key=key, problem=str(exc))
            self.input_problems[key] = problem
            self._count("input_rejected")
            return
        self.input_problems.pop(key, None)
        self._local[(map_name, key)] = raw
        self._count("input_accepted")

    def status(self) -> dict[str, Any]:
        return {"kind": self.name, "cluster": self._cfg.cluster_name,
                "members": list(self._cfg.members), "namespace": self.namespace,
                "connected": self._connected,
                "mode": "file-only" if self.breaker.open else "cluster",
                "last_error": self.last_error or None, "pending": len(self._dirty),
                "file_dir": str(self.file_dir), "counts": dict(self.counts),
                "input_problems": dict(self.input_problems)}


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
