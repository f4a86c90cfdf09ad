"""`dolphind.toml` -> frozen dataclasses.

Loading collects every problem in the file (not just the first) as ``ConfigError`` lines that
name the key path and the reason, so `dolphind check-config` can print them all at once.
Unknown keys are errors: a typo in a risk limit must not silently fall back to a default.

Fields whose change cannot be applied to a running daemon carry ``metadata={"restart": True}``
(directly, or inherited from their section). A reload keeps the running value of those fields,
applies everything else in one assignment, and reports the restart-only keys it did not apply.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import hashlib
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping

import orjson

from dolphind.affinity import affinity_problems

if TYPE_CHECKING:
    from dolphind.alpha.params import StrategyParams

RESTART = {"restart": True}


class ConfigError(Exception):
    """A config file that cannot be used; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# --------------------------------------------------------------------------------------------
# Sections. Defaults are the SPEC's defaults; every number lives here, not in the code.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpsConfig:
    """The HTTP ops surface (SPEC §9)."""

    # HOST:PORT of the HTTP server; loopback by default (port 0 picks a free port).
    listen: str = field(default="127.0.0.1:9108", metadata=RESTART)
    # A file holding the control token; DOLPHIND_OPS_TOKEN in the environment wins over it.
    # Read once at start (restart-only): a reload must not lock operators out half-way.
    token_file: str = field(default="", metadata=RESTART)


@dataclass(frozen=True, slots=True)
class DataConfig:
    """Where the daemon writes (store, audit log, scan files, plugin state)."""

    # Everything the daemon writes lives here (one daemon per folder: it is locked).
    dir: str = field(default="var", metadata=RESTART)


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    """The replay feed: historical OHLCV files emitted as bars."""

    # Files or folders of OHLCV candles (Feather, Parquet, CSV); see "Replay data".
    paths: tuple[str, ...] = field(default=("data/sample",), metadata=RESTART)
    # Market seconds per wall second; 0 means as fast as the consumers take them.
    speed: float = 60.0
    # Start over from the first bar when the data runs out.
    loop: bool = False
    # Only the first `max_bars` bars of the data (0 = all); handy for short demos and tests.
    max_bars: int = field(default=0, metadata=RESTART)
    # Replay only bars from `start` (inclusive) to `end` (exclusive): ISO dates or times, UTC.
    start: str = field(default="", metadata=RESTART)
    end: str = field(default="", metadata=RESTART)
    # Play at full speed until every scan window is warm, then at `speed`: the demo can trade
    # within minutes instead of after 751 bars at the configured pace.
    preroll: bool = False
    # After a restart, continue from the bar after the last one the scan checkpointed
    # (market time never runs backwards under restored positions); false: from the start.
    resume: bool = field(default=True, metadata=RESTART)


@dataclass(frozen=True, slots=True)
class WarmStartConfig:
    """The scan's windows across restarts and from Binance history ([warm_start]); restart-only.

    The prices the windows need (751 bars of the universe) are checkpointed to
    data.dir/scans/windows.npz; a restart within `max_gap_s` of market time is warm at once.
    """

    # Write the checkpoint at most this often (wall seconds), and at every clean stop; 0: only
    # at a clean stop (a crash then restarts from the previous one, or cold).
    checkpoint_every_s: float = field(default=30.0, metadata=RESTART)
    # A gap (checkpoint's last bar to the first new bar, market time) longer than this starts
    # the scan cold (/status says why); shorter gaps are filled.
    max_gap_s: float = field(default=900.0, metadata=RESTART)
    # Live feed: fill a gap's bars from Binance REST aggTrades; otherwise (or when that fails)
    # the last prices are carried forward, and counted.
    fill_from_rest: bool = field(default=True, metadata=RESTART)
    # Live feed, no usable checkpoint: fetch the windows' history from REST aggTrades first.
    backfill: bool = field(default=False, metadata=RESTART)
    # Where the aggTrades come from (tests point it at loopback).
    rest_base_url: str = field(default="https://fapi.binance.com", metadata=RESTART)
    # Never spend more than this share of the REST weight limit (per minute) on history.
    weight_share: float = field(default=0.25, metadata=RESTART)
    # Binance's request-weight limit per minute (USDT-M futures: 2400).
    weight_limit_1m: int = field(default=2400, metadata=RESTART)
    # At most this many aggTrades requests per symbol per fill (a gap in a busy market is
    # then carried forward for the rest, and counted, instead of stalling the start).
    max_requests_per_symbol: int = field(default=200, metadata=RESTART)


@dataclass(frozen=True, slots=True)
class FeedConfig:
    """Where bars come from (SPEC §1)."""

    # "replay" (historical files, [replay]) or "binance" (live WebSocket, [binance_feed]).
    kind: Literal["replay", "binance"] = field(default="replay", metadata=RESTART)
    # Bar length of the live feed, in seconds of venue time.
    bar_seconds: int = field(default=5, metadata=RESTART)
    # A symbol with no new price for this many bars is reported absent (NaN) downstream.
    max_stale_bars: int = 12


@dataclass(frozen=True, slots=True)
class BinanceFeedConfig:
    """The live Binance USDT-M WebSocket feed (SPEC §1); used when feed.kind = "binance"."""

    # Base of the routed endpoints: <ws_base_url>/public/stream?streams=... and /market/...
    ws_base_url: str = field(default="wss://fstream.binance.com", metadata=RESTART)
    # The universe, e.g. ["BTCUSDT", "ETHUSDT"] (upper case, as Binance spells the symbols).
    symbols: tuple[str, ...] = field(default=(), metadata=RESTART)
    # Bars from per-symbol aggTrade prints, or from the all-market !markPrice@arr@1s stream.
    bar_source: Literal["aggTrade", "markPrice"] = field(default="aggTrade", metadata=RESTART)
    # <sym>@depth5@500ms for the book features; <sym>@bookTicker is optional.
    depth: bool = field(default=True, metadata=RESTART)
    book_ticker: bool = field(default=False, metadata=RESTART)
    # Binance allows 1024 streams per connection; SPEC §1 keeps it at 200.
    max_streams_per_conn: int = field(default=200, metadata=RESTART)
    # Re-connect before Binance's 24 h cut-off (make-before-break, so no frame is lost).
    rotate_after_s: float = 23 * 3600.0
    # No frame at all on a connection for this long: it is stalled and re-connected.
    stall_timeout_s: float = 10.0
    # A subscribed stream silent this long after the connection opened raises an alarm.
    stream_grace_s: float = 60.0
    # Re-connect back-off: exponential from initial to max, full jitter in [d/2, d].
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    connect_timeout_s: float = 10.0
    # PEM file of the certificate authorities wss:// connections trust; empty: the system's
    # default store (set it for a TLS-inspecting proxy, or a test server's own certificate).
    ca_file: str = field(default="", metadata=RESTART)
    # A socket that received nothing for this long is pinged (aiohttp heartbeat); no pong
    # within half of it and the socket is dropped (reconnect reason "error").
    heartbeat_s: float = 10.0
    # A bar closes this long (venue time) after its end, so frames that crossed on
    # different connections still land in it.
    bar_close_delay_ms: int = 250
    # A frame whose event time is more than this ahead of the local clock is dropped (bad
    # frame "future_time"): one such frame would otherwise move the bar clock and the book
    # into the future and make every real frame after it late.
    max_clock_skew_s: float = 5.0


@dataclass(frozen=True, slots=True)
class BookConfig:
    """Order-book features from depth5 (SPEC §1, bible §9); counts are in bars."""

    imbalance_ma_bars: int = 5
    persistence_bars: int = 10
    depth_median_bars: int = 60
    withdrawal_bars: int = 3
    # A symbol whose depth fell by more than this fraction within the window is cascading.
    cascade_drop: float = 0.30
    cascade_window_bars: int = 3
    # regime_signal = +1 at this many cascading symbols or this median depth decay (1/s).
    stress_cascades: int = 3
    stress_velocity: float = 0.02
    # regime_signal = -1 when nothing cascades and median depth quality is at least this.
    calm_depth_quality: float = 0.9
    # A snapshot older than this many bars is not used (the symbol's features are NaN).
    stale_bars: int = 3


@dataclass(frozen=True, slots=True)
class ChannelsConfig:
    """Capacities of the bounded queues between stages."""

    # Capacity of each channel between stages (they block when full: bars are never dropped).
    bars: int = field(default=64, metadata=RESTART)


@dataclass(frozen=True, slots=True)
class SupervisionConfig:
    """How crashed stages are restarted (crash-only: too many restarts end the process)."""

    # Restarts allowed within the window; one more crash ends the process with exit 3.
    max_restarts: int = 5
    restart_window_s: float = 60.0
    # Exponential back-off between restarts of a crashed stage.
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    # A stage whose heartbeat is older than this is reported unhealthy.
    heartbeat_timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    """structlog output on stdout."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    # "auto": readable key=value on a terminal, JSON lines otherwise.
    format: Literal["auto", "json", "console"] = "auto"
    # Seconds between `heartbeat` log lines (equity, open positions, posture, halted, warm-up);
    # 0 turns them off. At most one a day.
    heartbeat_s: float = 60.0


@dataclass(frozen=True, slots=True)
class StateBusConfig:
    """Shared state (SPEC §8, bible §15): the embedded in-process bus, or a Hazelcast cluster
    (docs/statebus.md: keys, schemas, outages, fencing)."""

    kind: Literal["memory", "hazelcast"] = field(default="memory", metadata=RESTART)
    # Hazelcast only (kind = "hazelcast"): the cluster's name (bible §15: "dolphin").
    cluster_name: str = field(default="dolphin", metadata=RESTART)
    # The members to connect to, "host:port" each.
    members: tuple[str, ...] = field(default=("127.0.0.1:5701",), metadata=RESTART)
    # Prefix of this daemon's own keys (safety, PnL, state, meta-health, heartbeat):
    # "<namespace>:latest". Two daemons on one cluster need different namespaces
    # (e.g. the account or profile); "" writes the bible's bare keys.
    namespace: str = field(default="", metadata=RESTART)
    # The cluster runs the CP subsystem (3+ CP members): DOLPHIN_SAFETY is also written to
    # the CP AtomicReference (bible §14.6). The account lease uses a CP FencedLock either way
    # (without CP members Hazelcast runs it in its weaker "unsafe mode").
    cp_subsystem: bool = field(default=False, metadata=RESTART)
    # How long one cluster call (a write, a lock renewal) may take before it counts as failed.
    invocation_timeout_s: float = field(default=2.0, metadata=RESTART)
    # Consecutive failed pushes that open the breaker (bible §15.6): file-only mode.
    breaker_failures: int = field(default=5, metadata=RESTART)
    # Back-off of the client's reconnection and the breaker's recovery attempts.
    reconnect_initial_s: float = field(default=0.5, metadata=RESTART)
    reconnect_max_s: float = field(default=10.0, metadata=RESTART)
    # File-only mode: the latest values as <file_dir>/<MAP>/<key>.json (relative: data dir).
    file_dir: str = field(default="statebus", metadata=RESTART)
    # How often the daemon's own state (safety, PnL, state, meta-health) is published.
    publish_interval_s: float = 1.0
    # TLS to the members: on with tls = true; ca_file ("" = the system's CAs), and a client
    # certificate (cert_file + key_file) when the members require one. Credentials come
    # from the environment: DOLPHIND_HAZELCAST_USERNAME / DOLPHIND_HAZELCAST_PASSWORD.
    tls: bool = field(default=False, metadata=RESTART)
    ca_file: str = field(default="", metadata=RESTART)
    cert_file: str = field(default="", metadata=RESTART)
    key_file: str = field(default="", metadata=RESTART)


@dataclass(frozen=True, slots=True)
class PluginsConfig:
    """Entry-point plugins (SPEC §7). Per-plugin sections are validated by the plugin itself."""

    # Entry-point names (group dolphind.plugins) to load.
    # Loaded at start (restart-only): a reload re-validates and reconfigures loaded plugins.
    enabled: tuple[str, ...] = field(default=(), metadata=RESTART)
    # Start-up fails unless these are installed, e.g. "dolphind-guardian>=1" (distribution>=major).
    required: tuple[str, ...] = field(default=(), metadata=RESTART)
    # A plugin whose hooks fail this many times in a row is disabled (never fatal).
    max_failures: int = 3
    # Time budget of a plugin's synchronous pre-trade veto.
    veto_budget_ms: float = 5.0
    # Not a key: the [plugins.<name>] tables, validated by each plugin.
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RiskConfig:
    """Pre-trade risk rails (SPEC §4), checked in this order for every order.

    Reduce-only exits are exempt from every rule but the venue breaker: an exit only lowers
    risk, and a rail that traps an open position is worse than the exit it blocks.
    """

    # The static kill switch; the control plane's halt (POST /kill) has the same effect.
    trading_enabled: bool = True
    # Symbols that may be entered; empty means every symbol the venue has filters for.
    allowed_symbols: tuple[str, ...] = ()
    min_order_notional_usdt: float = 10.0
    max_order_notional_usdt: float = 15_000.0
    # Exposure caps count open positions plus working (unfilled) entry orders.
    max_symbol_exposure_usdt: float = 15_000.0
    max_gross_exposure_usdt: float = 30_000.0
    # Both the intent's own leverage and projected gross exposure / equity.
    max_leverage: float = 6.0
    # Token bucket: refill rate and burst size.
    max_orders_per_minute: float = 30.0
    order_burst: int = 5
    # Venue breaker: opens when the venue error rate over the window reaches the threshold
    # (with at least `breaker_min_requests` requests), stays open `breaker_open_s`, then lets
    # `breaker_probes` orders through (half-open); a failed probe opens it again.
    breaker_window_s: float = 60.0
    breaker_min_requests: int = 5
    breaker_error_rate: float = 0.5
    breaker_open_s: float = 30.0
    breaker_probes: int = 1


@dataclass(frozen=True, slots=True)
class BinanceVenueConfig:
    """The Binance USDT-M futures venue (SPEC §5), ``[execution.binance]``; restart-only.

    Keys come only from the environment (``api_key_env`` / ``api_secret_env``) or from the TOML
    file ``secrets_file`` (``api_key = "..."``, ``api_secret = "..."``); never from this file.
    """

    # Mainnet (real money) only when written out: a mainnet URL under "testnet" is an error.
    network: Literal["testnet", "mainnet"] = "testnet"
    # Empty: the network's own (mainnet https://fapi.binance.com, wss://fstream.binance.com;
    # testnet https://demo-fapi.binance.com, wss://fstream.binancefuture.com). Tests point
    # both at loopback.
    rest_base_url: str = ""
    ws_base_url: str = ""
    # The user-data stream on the /private route; {listen_key} is replaced.
    user_stream_path: str = "/private/ws/{listen_key}"
    api_key_env: str = "DOLPHIND_BINANCE_API_KEY"
    api_secret_env: str = "DOLPHIND_BINANCE_API_SECRET"
    secrets_file: str = ""
    recv_window_ms: int = 5000
    request_timeout_s: float = 10.0
    # Symbols whose leverage and margin type are set at start (empty: binance_feed.symbols).
    symbols: tuple[str, ...] = ()
    # Leverage per symbol ({ BTCUSDT = 3 }); symbols not listed get default_leverage (0: leave
    # the account's setting alone).
    leverage: Mapping[str, int] = field(default_factory=dict)
    default_leverage: int = 0
    # "CROSSED" or "ISOLATED" per symbol; default_margin_type "" leaves the account's setting.
    margin_type: Mapping[str, str] = field(default_factory=dict)
    default_margin_type: Literal["", "CROSSED", "ISOLATED"] = ""
    clock_sync_s: float = 300.0
    filters_refresh_s: float = 3600.0
    # listenKeys live 60 min; Binance asks for a keep-alive at least every 60 min.
    listen_key_keepalive_s: float = 1800.0
    # REST polling of working orders while the user stream is down.
    poll_interval_s: float = 2.0
    # Even with the stream up, a working order with no news for this long is queried.
    order_check_s: float = 30.0
    # With no order working, the account's positions are compared with the book this often
    # (besides every reconnect): foreign positions that appear or change while running are
    # reported (and, under execution.foreign = "adopt", adopted). 0: only at reconnects.
    positions_check_s: float = 30.0
    # User-stream reconnect back-off (exponential with jitter) and WS ping interval.
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    heartbeat_s: float = 20.0
    # Request budget: pace requests once the used weight passes weight_slow_fraction of the
    # limit (from exchangeInfo, or weight_limit_1m when > 0); hold them past weight_stop_fraction.
    weight_limit_1m: int = 0
    weight_slow_fraction: float = 0.7
    weight_stop_fraction: float = 0.9
    # An order that would have to wait longer than this for the budget is refused instead.
    max_order_delay_s: float = 2.0
    # Back-off after a 429 / -1003 without Retry-After; ban after a 418 without one.
    default_retry_after_s: float = 30.0
    default_ban_s: float = 120.0
    # An order whose submit got no answer is "not at the venue" only after its recvWindow
    # plus this grace has passed (Binance may still process a request it has not answered).
    unknown_grace_s: float = 2.0
    # One account, one trader (execution/lease.py): an exclusive flock on
    # <lease_dir>/<account>.lock fences every other daemon on this host that uses the same
    # directory (default: the host's lock directory; relative paths resolve against the
    # config file). The kernel drops it when the holder exits or is killed. With a shared
    # state bus (Hazelcast) a bus lease (lease_ttl_s, renewed every lease_renew_s) fences
    # other hosts as well; lease_renew_s is also how often a fenced daemon tries again.
    lease_dir: str = "/run/lock/dolphind"
    lease_ttl_s: float = 30.0
    lease_renew_s: float = 10.0


@dataclass(frozen=True, slots=True)
class ExecutionConfig:
    """The venue and its friction (SPEC §3 Friction, §5). Fees and slippage are reloadable."""

    # Where mode "live" sends orders; in modes paper and backtest orders fill in the paper
    # venue whatever this says (`dolphind check-config` prints where a config trades).
    venue: Literal["paper", "binance"] = field(default="paper", metadata=RESTART)
    binance: BinanceVenueConfig = field(default=BinanceVenueConfig(), metadata=RESTART)
    # Starting capital; used only when the store is empty (after that the store is the truth).
    capital_usdt: float = field(default=10_000.0, metadata=RESTART)
    seed: int = field(default=0, metadata=RESTART)
    # A Binance USDT-M `GET /fapi/v1/exchangeInfo` JSON file (symbol filters). Empty: none.
    exchange_info: str = field(default="", metadata=RESTART)
    # Paper only: symbols missing from exchange_info trade on generic filters instead of being
    # refused (tick 0.00001, step 0.001, min qty 0.001, min notional 5).
    paper_fallback_filters: bool = field(default=True, metadata=RESTART)
    # Paper/backtest liquidation: a Binance `GET /fapi/v1/leverageBracket` JSON file
    # (maintenance-margin brackets per symbol). Empty, or a symbol it does not list: Binance's
    # first bracket, 0.4 % for BTCUSDT/ETHUSDT and 0.5 % otherwise.
    leverage_brackets: str = field(default="", metadata=RESTART)
    client_id_prefix: str = field(default="dd", metadata=RESTART)
    # Positions and orders on the venue account that this daemon did not open (not its client
    # id prefix, not in its store), found at reconciliation: "ignore" reports them (/status,
    # dolphind_foreign_*, audit) and leaves them alone (the exposure rails still count them);
    # "adopt" takes positions into the book (the strategy may then close them) and cancels the
    # orders; "refuse" will not start while any are there (exit 2).
    foreign: Literal["ignore", "adopt", "refuse"] = field(default="ignore", metadata=RESTART)
    maker_fee_bps: float = 2.0
    taker_fee_bps: float = 5.0
    maker_fill_rate_entry: float = 0.62
    maker_fill_rate_exit: float = 0.50
    # "draw": each fill is maker with the maker-fill rate (seeded draw per order);
    # "blended": every fill pays the expected fee (rate*maker + (1-rate)*taker).
    fee_model: Literal["draw", "blended"] = "draw"
    entry_slippage_bps: float = 0.0
    tp_slippage_bps: float = 2.0
    sl_slippage_bps: float = 5.0
    other_slippage_bps: float = 2.0
    tp_reasons: tuple[str, ...] = ("FIXED_TP", "TAKE_PROFIT", "TP")
    sl_reasons: tuple[str, ...] = ("STOP_LOSS", "SL", "HARD_SL")
    equity_snapshot_interval_s: float = 60.0
    # How long to wait for working orders to reach a final state: at shutdown, and before an
    # exit is sized (it must include the fills of entries still being booked).
    drain_timeout_s: float = 5.0
    # Exits never give up: a reduce-only order (exit, flatten) refused by a rate limit, a ban,
    # the venue breaker, a 5xx or a timeout is sent again, with capped exponential back-off and
    # jitter between these bounds (never before a 429's Retry-After or a 418's ban ends),
    # until the position is closed.
    exit_retry_initial_s: float = 0.5
    exit_retry_max_s: float = 30.0
    # An exit still not through after this long is stuck: an incident, and /status says so.
    exit_stuck_after_s: float = 60.0


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """SQLite store and the hash-chained audit log (SPEC §6). Paths resolve under data.dir."""

    path: str = field(default="dolphind.sqlite", metadata=RESTART)
    # NORMAL: a commit survives kill -9 (it is in the WAL file); FULL: also a power cut.
    synchronous: Literal["NORMAL", "FULL"] = field(default="NORMAL", metadata=RESTART)
    queue_capacity: int = field(default=1024, metadata=RESTART)
    max_batch: int = 256
    audit_path: str = field(default="audit.jsonl", metadata=RESTART)
    # always: fsync every written batch; interval: at most every audit_fsync_interval_s;
    # never: leave it to the OS. A kill -9 loses nothing written in any mode.
    audit_fsync: Literal["always", "interval", "never"] = "interval"
    audit_fsync_interval_s: float = 1.0


@dataclass(frozen=True, slots=True)
class StrategyConfig:
    """The strategy profile (SPEC §3). ``params`` overrides champion parameters by name
    (``[strategy.params]``); the champion is frozen, so any override needs its own profile name.
    Restart-only: a strategy does not change under an open position."""

    profile: str = field(default="champion", metadata=RESTART)
    params: Mapping[str, Any] = field(default_factory=dict, metadata=RESTART)
    # A JSON file with the ACB external factors ({"funding_btc", "dvol_btc", "fng", "taker"},
    # bible §10.2), read at start and on every reload; the state bus key
    # DOLPHIN_FEATURES/exf_latest wins when present. Empty: none (boost 1.0).
    external_factors_file: str = ""


@dataclass(frozen=True, slots=True)
class ExternalFactorsConfig:
    """The live ACB external-factor producer (bible §10.2, issue 16). It publishes
    DOLPHIN_FEATURES/exf_latest on the state bus; a source that fails is published as null
    (absent), never guessed. Restart-only."""

    # Run the producer inside the daemon (off: the bus or strategy.external_factors_file).
    enabled: bool = field(default=False, metadata=RESTART)
    # Binance USDT-M public REST: funding rate (/fapi/v1/fundingRate) and the taker
    # buy/sell volume ratio (/futures/data/takerlongshortRatio) of BTCUSDT.
    binance_rest_url: str = field(default="https://fapi.binance.com", metadata=RESTART)
    # DVOL (Deribit get_volatility_index_data, or any JSON {"value": x}); empty: absent.
    dvol_url: str = field(default="", metadata=RESTART)
    # Fear & Greed (alternative.me /fng/ shape, or {"value": x}); empty: absent.
    fng_url: str = field(default="", metadata=RESTART)
    # Fetch every this many seconds (10 s - 1 day).
    interval_s: float = field(default=300.0, metadata=RESTART)
    # One request's time limit (0.1-60 s).
    timeout_s: float = field(default=10.0, metadata=RESTART)
    # A value older than this many intervals is published as absent.
    max_age_intervals: int = field(default=3, metadata=RESTART)


@dataclass(frozen=True, slots=True)
class ScanConfig:
    """What makes a scan tradeable (issue 16)."""

    # A scan over fewer priced symbols than this opens no position: eigenvalues of a two- or
    # three-symbol "market" say nothing about the market (0 turns the check off).
    min_symbols: int = 10


@dataclass(frozen=True, slots=True)
class Config:
    # "paper" (simulated fills), "live" (real orders) or "backtest" (set by dolphind backtest).
    # The one switch for real money: only "live" sends orders to execution.venue, and it needs
    # feed.kind = "binance"; paper and backtest always fill in the paper venue.
    mode: Literal["paper", "live", "backtest"] = field(default="paper", metadata=RESTART)
    # SIGTERM/SIGINT: drain and exit within this many seconds.
    shutdown_timeout_s: float = 10.0
    # Pin the process (the event loop and its helper threads) to these CPUs; empty: the OS
    # places them. The loop and the store thread hand work back and forth on every order; on
    # a VM a wake-up across vCPUs costs more than the commit it waits for, so one CPU gives
    # the steadiest intent-to-fill latency (bench/execution.py measures both).
    cpu_affinity: tuple[int, ...] = field(default=(), metadata=RESTART)
    ops: OpsConfig = OpsConfig()
    data: DataConfig = DataConfig()
    feed: FeedConfig = FeedConfig()
    replay: ReplayConfig = ReplayConfig()
    warm_start: WarmStartConfig = WarmStartConfig()
    binance_feed: BinanceFeedConfig = BinanceFeedConfig()
    book: BookConfig = BookConfig()
    channels: ChannelsConfig = ChannelsConfig()
    supervision: SupervisionConfig = SupervisionConfig()
    logging: LoggingConfig = LoggingConfig()
    statebus: StateBusConfig = StateBusConfig()
    plugins: PluginsConfig = PluginsConfig()
    risk: RiskConfig = RiskConfig()
    execution: ExecutionConfig = ExecutionConfig()
    store: StoreConfig = StoreConfig()
    strategy: StrategyConfig = StrategyConfig()
    scan: ScanConfig = ScanConfig()
    external_factors: ExternalFactorsConfig = ExternalFactorsConfig()
    # Not read from the file: where the file was, and its content hash (for /status and reload).
    source: str = field(default="", metadata={"internal": True})
    sha256: str = field(default="", metadata={"internal": True})

    @property
    def base_dir(self) -> Path:
        return Path(self.source).parent if self.source else Path.cwd()

    def resolve(self, path: str) -> Path:
        """Relative paths in the config resolve against the config file's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    @property
    def data_dir(self) -> Path:
        return self.resolve(self.data.dir)

    @property
    def hash(self) -> str:
        return self.sha256[:16]


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate ``path``; raise ConfigError listing every problem."""
    p = Path(path)
    try:
        raw_bytes = p.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read ({exc.strerror or exc})"]) from None
    try:
        raw = tomllib.loads(raw_bytes.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{p}: not valid TOML ({exc})"]) from None
    except RecursionError:  # tomllib recurses per nested array/table
        raise ConfigError([f"{p}: not valid TOML (nested too deeply)"]) from None
    cfg = config_from_dict(raw)
    return dataclasses.replace(
        cfg, source=str(p.resolve()), sha256=hashlib.sha256(raw_bytes).hexdigest()
    )


def config_from_dict(raw: Mapping[str, Any]) -> Config:
    problems: list[str] = _nesting_problems(raw)
    if problems:  # a value this deep would blow the stack of every later deep comparison
        raise ConfigError(problems)
    cfg = _build(Config, raw, "", problems)
    if not problems:
        problems.extend(_cross_checks(cfg))
        named = {p.split(":", 1)[0] for p in problems}
        problems.extend(p for p in range_problems(cfg) if p.split(":", 1)[0] not in named)
    if problems:
        raise ConfigError(problems)
    return cfg


def strategy_params(cfg: Config, problems: list[str] | None = None) -> "StrategyParams":
    """The strategy parameters the config asks for: the champion plus ``[strategy.params]``.

    A changed champion parameter under ``profile = "champion"`` is a problem listing the keys.
    """
    from dolphind.alpha.params import CHAMPION, check_profile

    found: list[str] = [] if problems is None else problems
    overrides = dict(cfg.strategy.params)
    before = len(found)
    from dolphind.alpha.params import DERIVED_FIELDS  # durations are set in seconds (issue 16)

    for bars_key, secs_key in DERIVED_FIELDS:
        if bars_key in overrides:
            found.append(f"strategy.params.{bars_key}: durations are defined in seconds and "
                         f"converted with the run's bar interval; set {secs_key} instead")
            overrides.pop(bars_key)
    merged = _build(type(CHAMPION), {**CHAMPION.as_dict(), **overrides}, "strategy.params", found)
    for _, secs_key in (*DERIVED_FIELDS, ("", "validation_bar_s")):
        value = getattr(merged, secs_key)
        if not (isinstance(value, (int, float)) and 0.0 < value <= 30 * 86_400.0):
            found.append(f"strategy.params.{secs_key}: must be > 0 and <= 30 days (seconds), "
                         f"got {value!r}")
    if len(found) == before:
        changed = check_profile(cfg.strategy.profile, merged)
        if changed:
            found.append("strategy.params: profile 'champion' is frozen; these keys differ from "
                         f"the champion: {', '.join(changed)} (name a new strategy.profile)")
    if problems is None and found:
        raise ConfigError(found)
    return merged


def validate(cfg: Config) -> list[str]:
    """Problems with a config built in code (e.g. a backtest's overrides of a loaded one)."""
    return _cross_checks(cfg)


def _cross_checks(cfg: Config) -> list[str]:
    problems: list[str] = []
    strategy_params(cfg, problems)
    try:
        parse_listen(cfg.ops.listen)
    except ValueError as exc:
        problems.append(f"ops.listen: {exc}")
    if cfg.shutdown_timeout_s <= 0:
        problems.append("shutdown_timeout_s: must be > 0")
    if not 0 <= cfg.logging.heartbeat_s <= 86_400:
        problems.append("logging.heartbeat_s: must be in [0, 86400] (0 = no heartbeat)")
    problems.extend(affinity_problems(cfg.cpu_affinity))
    if not 0 <= cfg.scan.min_symbols <= 10_000:
        problems.append("scan.min_symbols: must be 0-10000")
    x = cfg.external_factors
    if not 10.0 <= x.interval_s <= 86_400.0:
        problems.append("external_factors.interval_s: must be 10-86400")
    if not 0.1 <= x.timeout_s <= 60.0:
        problems.append("external_factors.timeout_s: must be 0.1-60")
    if not 1 <= x.max_age_intervals <= 1000:
        problems.append("external_factors.max_age_intervals: must be 1-1000")
    for key in ("binance_rest_url", "dvol_url", "fng_url"):
        url = getattr(x, key)
        if url and not url.startswith(("http://", "https://")):
            problems.append(f"external_factors.{key}: must be an http(s) URL, got {url!r}")
    for key in ("start", "end"):
        value = getattr(cfg.replay, key)
        if value:
            try:
                parse_utc(value)
            except ValueError:
                problems.append(f"replay.{key}: expected an ISO date or time like "
                                f"'2025-05-10' or '2025-05-10T12:00', got {value!r}")
    if cfg.replay.speed < 0:
        problems.append("replay.speed: must be >= 0 (0 = as fast as possible)")
    if cfg.feed.bar_seconds <= 0:
        problems.append("feed.bar_seconds: must be > 0")
    problems.extend(_warm_start_checks(cfg.warm_start))
    if cfg.channels.bars < 1:
        problems.append("channels.bars: must be >= 1")
    s = cfg.supervision
    if s.max_restarts < 0:
        problems.append("supervision.max_restarts: must be >= 0")
    if s.backoff_initial_s <= 0 or s.backoff_max_s < s.backoff_initial_s:
        problems.append("supervision: need 0 < backoff_initial_s <= backoff_max_s")
    if cfg.feed.kind == "replay" and not cfg.replay.paths:
        problems.append("replay.paths: at least one file or folder is needed for feed.kind = 'replay'")
    problems.extend(_binance_feed_checks(cfg))
    if cfg.mode == "live" and cfg.execution.venue != "binance":
        problems.append("mode: 'live' needs execution.venue = 'binance'")
    problems.extend(_real_money_checks(cfg))
    problems.extend(_execution_checks(cfg))
    problems.extend(_statebus_checks(cfg))
    for name in cfg.plugins.enabled:
        if not name.isidentifier():
            problems.append(f"plugins.enabled: {name!r} is not a plugin name")
    return problems


def _statebus_checks(cfg: Config) -> list[str]:
    """[statebus]: member addresses, timeouts and back-off in range, TLS files readable."""
    b, problems = cfg.statebus, []
    if b.kind != "hazelcast":
        return problems
    if not b.members:
        problems.append("statebus.members: at least one member (host:port) is needed")
    for m in b.members:
        host, _, port = m.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            problems.append(f"statebus.members: expected host:port, got {m!r}")
    if not b.cluster_name.strip():
        problems.append("statebus.cluster_name: must not be empty")
    if b.namespace and not all(c.isalnum() or c in "-_." for c in b.namespace):
        problems.append("statebus.namespace: letters, digits, '-', '_' and '.' only")
    if not 0.05 <= b.invocation_timeout_s <= 60:
        problems.append("statebus.invocation_timeout_s: must be in [0.05, 60]")
    if not 1 <= b.breaker_failures <= 1000:
        problems.append("statebus.breaker_failures: must be in [1, 1000]")
    if not 0.01 <= b.reconnect_initial_s <= b.reconnect_max_s <= 600:
        problems.append("statebus: need 0.01 <= reconnect_initial_s <= reconnect_max_s <= 600")
    if not 0.05 <= b.publish_interval_s <= 3600:
        problems.append("statebus.publish_interval_s: must be in [0.05, 3600]")
    if not b.file_dir.strip():
        problems.append("statebus.file_dir: must name a directory")
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(b, key)
        if path and not os.access(cfg.resolve(path), os.R_OK):
            problems.append(f"statebus.{key}: {path} is not readable")
    if bool(b.cert_file) != bool(b.key_file):
        problems.append("statebus: cert_file and key_file go together")
    if (b.ca_file or b.cert_file) and not b.tls:
        problems.append("statebus: ca_file/cert_file need tls = true")
    return problems


def _warm_start_checks(w: WarmStartConfig) -> list[str]:
    problems = []
    if not 0 <= w.checkpoint_every_s <= 3600:
        problems.append("warm_start.checkpoint_every_s: must be in [0, 3600]")
    if not 0 <= w.max_gap_s <= 7 * 86400:
        problems.append("warm_start.max_gap_s: must be in [0, 604800]")
    if not 0 < w.weight_share <= 1:
        problems.append("warm_start.weight_share: must be in (0, 1]")
    if not 20 <= w.weight_limit_1m <= 100_000:
        problems.append("warm_start.weight_limit_1m: must be in [20, 100000]")
    if not 1 <= w.max_requests_per_symbol <= 100_000:
        problems.append("warm_start.max_requests_per_symbol: must be in [1, 100000]")
    if not w.rest_base_url.startswith(("http://", "https://")):
        problems.append("warm_start.rest_base_url: must start with http:// or https://")
    return problems


def _execution_checks(cfg: Config) -> list[str]:
    """Risk, execution and store: limits that contradict each other or cannot be money."""
    problems = []
    r, x, st = cfg.risk, cfg.execution, cfg.store
    for key in ("min_order_notional_usdt", "max_order_notional_usdt", "max_symbol_exposure_usdt",
                "max_gross_exposure_usdt", "max_leverage", "max_orders_per_minute",
                "breaker_window_s", "breaker_open_s"):
        if getattr(r, key) <= 0:
            problems.append(f"risk.{key}: must be > 0")
    if r.min_order_notional_usdt > r.max_order_notional_usdt:
        problems.append("risk: min_order_notional_usdt must be <= max_order_notional_usdt")
    if r.max_symbol_exposure_usdt > r.max_gross_exposure_usdt:
        problems.append("risk: max_symbol_exposure_usdt must be <= max_gross_exposure_usdt")
    if r.order_burst < 1 or r.breaker_min_requests < 1 or r.breaker_probes < 1:
        problems.append("risk: order_burst, breaker_min_requests and breaker_probes must be >= 1")
    if not 0 < r.breaker_error_rate <= 1:
        problems.append("risk.breaker_error_rate: must be in (0, 1]")
    if x.capital_usdt <= 0:
        problems.append("execution.capital_usdt: must be > 0")
    for key in ("maker_fee_bps", "taker_fee_bps", "entry_slippage_bps", "tp_slippage_bps",
                "sl_slippage_bps", "other_slippage_bps", "equity_snapshot_interval_s",
                "drain_timeout_s"):
        if getattr(x, key) < 0:
            problems.append(f"execution.{key}: must be >= 0")
    for key in ("maker_fill_rate_entry", "maker_fill_rate_exit"):
        if not 0 <= getattr(x, key) <= 1:
            problems.append(f"execution.{key}: must be in [0, 1]")
    if not 0 < x.exit_retry_initial_s <= x.exit_retry_max_s <= 3600:
        problems.append("execution: need 0 < exit_retry_initial_s <= exit_retry_max_s <= 3600")
    if not 0 < x.exit_stuck_after_s <= 86_400:
        problems.append("execution.exit_stuck_after_s: must be in (0, 86400]")
    if not x.client_id_prefix.isalnum() or len(x.client_id_prefix) > 3:
        problems.append("execution.client_id_prefix: 1-3 letters or digits (Binance allows "
                        "36 characters in a client order id)")
    if st.queue_capacity < 1 or st.max_batch < 1:
        problems.append("store: queue_capacity and max_batch must be >= 1")
    if st.audit_fsync_interval_s <= 0:
        problems.append("store.audit_fsync_interval_s: must be > 0")
    if cfg.mode == "live" and x.venue == "paper":
        problems.append("execution.venue: 'paper' cannot trade in mode 'live'")
    if x.venue == "binance":
        problems.extend(_binance_venue_checks(cfg))
    return problems


_MAINNET_HOSTS = ("fapi.binance.com", "fstream.binance.com")


def trading_target(cfg: Config) -> tuple[str, str | None]:
    """(venue, network) this config sends its orders to: the one switch for real money.

    Only ``mode = "live"`` reaches a real venue (``execution.venue``, on its ``network``);
    ``paper`` and ``backtest`` always fill in the paper venue, whatever ``execution.venue``
    says (with the live feed, paper trades real market data)."""
    if cfg.mode == "live":
        return cfg.execution.venue, cfg.execution.binance.network
    return "paper", None


def describe_trading(cfg: Config) -> str:
    """One line: which venue and network this config trades, on which market data."""
    venue, network = trading_target(cfg)
    data = ("live Binance market data" if cfg.feed.kind == "binance"
            else "replayed history")
    if venue == "paper":
        ignored = (" (execution.venue 'binance' is used only in mode 'live')"
                   if cfg.execution.venue == "binance" else "")
        return f"trades: paper venue (simulated fills, no real orders) on {data}{ignored}"
    money = "REAL MONEY" if network == "mainnet" else "test money"
    return f"trades: {venue} {network} ({money}, real orders) on {data}"


def _real_money_checks(cfg: Config) -> list[str]:
    """Real orders need mode 'live' and a live feed; mainnet needs to be written out."""
    problems = []
    if cfg.mode == "live" and cfg.feed.kind != "binance":
        problems.append("mode: 'live' needs feed.kind = 'binance' (real orders on replayed "
                        "prices would trade on stale data; use mode 'paper' to replay)")
    b = cfg.execution.binance
    if b.network != "mainnet":
        for key in ("rest_base_url", "ws_base_url"):
            url = getattr(b, key)
            if any(f"//{host}" in url for host in _MAINNET_HOSTS):
                problems.append(f"execution.binance.{key}: {url} is Binance mainnet; write "
                                "network = \"mainnet\" to trade real money")
    return problems


def _binance_venue_checks(cfg: Config, environ: Mapping[str, str] = os.environ) -> list[str]:
    """[execution.binance]: URLs, limits, leverage and margin types, and (live) credentials."""
    b = cfg.execution.binance
    problems = []
    if b.rest_base_url and (not b.rest_base_url.startswith(("http://", "https://"))
                            or b.rest_base_url.endswith("/")):
        problems.append("execution.binance.rest_base_url: expected http(s)://HOST[:PORT] "
                        "without a trailing /")
    if b.ws_base_url and (not b.ws_base_url.startswith(("ws://", "wss://"))
                          or b.ws_base_url.endswith("/")):
        problems.append("execution.binance.ws_base_url: expected ws(s)://HOST[:PORT] "
                        "without a trailing /")
    if "{listen_key}" not in b.user_stream_path or not b.user_stream_path.startswith("/"):
        problems.append("execution.binance.user_stream_path: must start with / and contain "
                        "{listen_key}")
    if not 1 <= b.recv_window_ms <= 60_000:
        problems.append("execution.binance.recv_window_ms: must be 1-60000 (Binance's range)")
    for name in ("request_timeout_s", "clock_sync_s", "filters_refresh_s",
                 "listen_key_keepalive_s", "poll_interval_s", "order_check_s", "heartbeat_s",
                 "default_retry_after_s", "default_ban_s", "lease_ttl_s", "lease_renew_s",
                 "backoff_initial_s"):
        if getattr(b, name) <= 0:
            problems.append(f"execution.binance.{name}: must be > 0")
    if b.listen_key_keepalive_s >= 3600:
        problems.append("execution.binance.listen_key_keepalive_s: must be below 3600 "
                        "(a listenKey lives 60 minutes)")
    if b.backoff_max_s < b.backoff_initial_s:
        problems.append("execution.binance: need backoff_initial_s <= backoff_max_s")
    if not 0 < b.weight_slow_fraction <= b.weight_stop_fraction <= 1:
        problems.append("execution.binance: need 0 < weight_slow_fraction <= "
                        "weight_stop_fraction <= 1")
    if not 0 <= b.positions_check_s <= 86_400:
        problems.append("execution.binance.positions_check_s: must be in [0, 86400] "
                        "(0: only at reconnects)")
    if b.weight_limit_1m < 0 or b.max_order_delay_s < 0 or b.unknown_grace_s < 0:
        problems.append("execution.binance: weight_limit_1m, max_order_delay_s and "
                        "unknown_grace_s must be >= 0")
    if not b.lease_dir.strip():
        problems.append("execution.binance.lease_dir: must name a directory (the account "
                        "lease's lock file lives there)")
    if b.lease_renew_s >= b.lease_ttl_s:
        problems.append("execution.binance.lease_renew_s: must be shorter than lease_ttl_s")
    for sym, lev in dict(b.leverage).items():
        if isinstance(lev, bool) or not isinstance(lev, int) or not 1 <= lev <= 125:
            problems.append(f"execution.binance.leverage.{sym}: an integer 1-125, got {lev!r}")
    if not 0 <= b.default_leverage <= 125:
        problems.append("execution.binance.default_leverage: 0 (leave alone) or 1-125")
    for sym, mt in dict(b.margin_type).items():
        if mt not in ("CROSSED", "ISOLATED"):
            problems.append(f"execution.binance.margin_type.{sym}: 'CROSSED' or 'ISOLATED', "
                            f"got {mt!r}")
    if cfg.mode == "live":
        has_env = bool(environ.get(b.api_key_env, "").strip()
                       and environ.get(b.api_secret_env, "").strip())
        if not (has_env or b.secrets_file):
            problems.append(f"execution.binance: mode 'live' needs credentials: set "
                            f"{b.api_key_env} and {b.api_secret_env} in the environment or "
                            "name a secrets_file")
    return problems


def _binance_feed_checks(cfg: Config) -> list[str]:
    b, k = cfg.binance_feed, cfg.book
    problems = []
    if cfg.feed.kind == "binance" and not b.symbols:
        problems.append("binance_feed.symbols: at least one symbol is needed for feed.kind = 'binance'")
    for sym in b.symbols:
        if not (sym.isascii() and sym.isalnum() and sym == sym.upper()):
            problems.append(f"binance_feed.symbols: {sym!r} is not an upper-case symbol like 'BTCUSDT'")
    if len(set(b.symbols)) != len(b.symbols):
        problems.append("binance_feed.symbols: a symbol is listed twice")
    if not b.ws_base_url.startswith(("ws://", "wss://")) or b.ws_base_url.endswith("/"):
        problems.append("binance_feed.ws_base_url: expected ws:// or wss://HOST[:PORT] without a trailing /")
    if not 1 <= b.max_streams_per_conn <= 200:
        problems.append("binance_feed.max_streams_per_conn: must be 1-200 (SPEC §1)")
    if not 0 < b.rotate_after_s < 24 * 3600:
        problems.append("binance_feed.rotate_after_s: must be > 0 and below Binance's 24 h cut-off")
    for name in ("stall_timeout_s", "stream_grace_s", "connect_timeout_s", "heartbeat_s",
                 "max_clock_skew_s"):
        if getattr(b, name) <= 0:
            problems.append(f"binance_feed.{name}: must be > 0")
    if b.backoff_initial_s <= 0 or b.backoff_max_s < b.backoff_initial_s:
        problems.append("binance_feed: need 0 < backoff_initial_s <= backoff_max_s")
    if not 0 <= b.bar_close_delay_ms < cfg.feed.bar_seconds * 1000:
        problems.append("binance_feed.bar_close_delay_ms: must be >= 0 and shorter than a bar")
    for name in ("imbalance_ma_bars", "persistence_bars", "depth_median_bars", "withdrawal_bars",
                 "cascade_window_bars", "stress_cascades", "stale_bars"):
        if getattr(k, name) < 1:
            problems.append(f"book.{name}: must be >= 1")
    if not 0 < k.cascade_drop < 1:
        problems.append("book.cascade_drop: must be between 0 and 1")
    if k.stress_velocity <= 0 or k.calm_depth_quality <= 0:
        problems.append("book: stress_velocity and calm_depth_quality must be > 0")
    return problems


def parse_utc(value: str) -> int:
    """An ISO date or time (UTC unless it says otherwise) as epoch nanoseconds."""
    import datetime as dt

    stamp = dt.datetime.fromisoformat(value)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.timezone.utc)
    return int(stamp.timestamp()) * 10**9 + stamp.microsecond * 1000


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {listen!r}")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"port must be 0-65535, got {port!r}")
    return host.strip("[]"), int(port)


def _build(cls: type, raw: Any, path: str, problems: list[str]) -> Any:
    if not isinstance(raw, Mapping):
        problems.append(f"{path or '<root>'}: expected a table, got {_tname(raw)}")
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    kwargs: dict[str, Any] = {}
    if cls is PluginsConfig:
        # [plugins.<name>] tables belong to the plugins, which validate them when they load.
        fields.pop("settings")
        settings = {}
        for key in [k for k in raw if k not in fields]:
            if isinstance(raw[key], Mapping):
                settings[key] = dict(raw[key])
            else:
                problems.append(f"{_join(path, key)}: unknown key (plugin settings are a table)")
        kwargs["settings"] = settings
        raw = {k: v for k, v in raw.items() if k in fields}
    if cls is StrategyConfig and "params" in raw:
        # Checked field by field against StrategyParams in the cross-checks.
        if isinstance(raw["params"], Mapping):
            kwargs["params"] = dict(raw["params"])
        else:
            problems.append(f"{_join(path, 'params')}: expected a table [strategy.params]")
        raw = {k: v for k, v in raw.items() if k != "params"}
    for key in raw:
        if key not in fields:
            problems.append(f"{_join(path, key)}: unknown key")
    for name in fields:
        if name in raw:
            kwargs[name] = _coerce(hints[name], raw[name], _join(path, name), problems)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, path: str, problems: list[str]) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, problems)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            problems.append(f"{path}: must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        return value
    if origin is tuple:
        (item_tp, _) = typing.get_args(tp)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list, got {_tname(value)}")
            return ()
        return tuple(_coerce(item_tp, v, f"{path}[{i}]", problems) for i, v in enumerate(value))
    if origin is collections.abc.Mapping:
        # A TOML table of per-symbol values ({ BTCUSDT = 3 }); TOML keys are always strings.
        (_, value_tp) = typing.get_args(tp)
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a table like {{ BTCUSDT = ... }}, got {_tname(value)}")
            return {}
        return {k: _coerce(value_tp, v, _join(path, k), problems) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            problems.append(f"{path}: expected true or false, got {_tname(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{path}: expected an integer, got {_tname(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{path}: expected a number, got {_tname(value)}")
            return value
        if value != value or value in (float("inf"), float("-inf")):
            problems.append(f"{path}: must be a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            problems.append(f"{path}: expected a string, got {_tname(value)}")
        elif "\x00" in value:  # no path, URL or name holds one; the OS refuses it late
            problems.append(f"{path}: contains a NUL character")
        return value
    return value


def _join(path: str, key: str) -> str:
    if not (key.isprintable() and key.strip() == key and key):
        key = repr(key)  # a key with a newline or NUL must not break the one-line problem
    return f"{path}.{key}" if path else key


def _tname(value: Any) -> str:
    return {dict: "a table", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


# --------------------------------------------------------------------------------------------
# Ranges: every numeric key has one (tests/unit/test_config_ranges.py checks that none lacks it)
# --------------------------------------------------------------------------------------------

# Deeper values are refused while loading: nothing in a config needs them, and deep nesting
# overflows the stack of the TOML parser, of comparisons and of JSON encoding later on.
MAX_NESTING = 32

_DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Range:
    """Inclusive bounds of a numeric key; ``open_lo`` excludes ``lo`` (e.g. "> 0")."""

    lo: float
    hi: float
    open_lo: bool = False

    def contains(self, value: float) -> bool:
        return (value > self.lo if self.open_lo else value >= self.lo) and value <= self.hi

    def __str__(self) -> str:
        return f"{'(' if self.open_lo else '['}{self.lo:g}, {self.hi:g}]"


def _pos(hi: float) -> Range:
    return Range(0, hi, open_lo=True)


# Upper bounds are where a value stops being a setting and becomes a typo (a timeout of a
# year, capital of 1e308, bars of 1e15 s); none is near anything a real deployment uses.
RANGES: dict[str, Range] = {
    "shutdown_timeout_s": _pos(3600),
    "feed.bar_seconds": Range(1, _DAY),
    "feed.max_stale_bars": Range(1, 100_000),
    "replay.speed": Range(0, 1e9),
    "replay.max_bars": Range(0, 1e9),
    "binance_feed.max_streams_per_conn": Range(1, 200),
    "binance_feed.rotate_after_s": _pos(_DAY - 1),
    "binance_feed.stall_timeout_s": _pos(3600),
    "binance_feed.stream_grace_s": _pos(_DAY),
    "binance_feed.backoff_initial_s": _pos(3600),
    "binance_feed.backoff_max_s": _pos(3600),
    "binance_feed.connect_timeout_s": _pos(600),
    "binance_feed.heartbeat_s": _pos(3600),
    "binance_feed.bar_close_delay_ms": Range(0, _DAY * 1000),
    "binance_feed.max_clock_skew_s": _pos(3600),
    "book.imbalance_ma_bars": Range(1, 100_000),
    "book.persistence_bars": Range(1, 100_000),
    "book.depth_median_bars": Range(1, 100_000),
    "book.withdrawal_bars": Range(1, 100_000),
    "book.cascade_drop": Range(0, 1, open_lo=True),
    "book.cascade_window_bars": Range(1, 100_000),
    "book.stress_cascades": Range(1, 100_000),
    "book.stress_velocity": _pos(1e6),
    "book.calm_depth_quality": _pos(1e6),
    "book.stale_bars": Range(1, 100_000),
    "channels.bars": Range(1, 1_000_000),
    "supervision.max_restarts": Range(0, 1_000_000),
    "supervision.restart_window_s": _pos(_DAY),
    "supervision.backoff_initial_s": _pos(3600),
    "supervision.backoff_max_s": _pos(3600),
    "supervision.heartbeat_timeout_s": _pos(_DAY),
    "plugins.max_failures": Range(1, 1_000_000),
    "plugins.veto_budget_ms": _pos(10_000),
    "risk.min_order_notional_usdt": _pos(1e9),
    "risk.max_order_notional_usdt": _pos(1e9),
    "risk.max_symbol_exposure_usdt": _pos(1e10),
    "risk.max_gross_exposure_usdt": _pos(1e10),
    "risk.max_leverage": _pos(125),
    "risk.max_orders_per_minute": _pos(1e12),  # tests and benches set 1e9+ for "no limit"
    "risk.order_burst": Range(1, 1e9),
    "risk.breaker_window_s": _pos(_DAY),
    "risk.breaker_min_requests": Range(1, 1_000_000),
    "risk.breaker_error_rate": Range(0, 1, open_lo=True),
    "risk.breaker_open_s": _pos(_DAY),
    "risk.breaker_probes": Range(1, 1000),
    "execution.binance.recv_window_ms": Range(1, 60_000),
    "execution.binance.request_timeout_s": _pos(600),
    "execution.binance.default_leverage": Range(0, 125),
    "execution.binance.clock_sync_s": _pos(_DAY),
    "execution.binance.filters_refresh_s": _pos(7 * _DAY),
    "execution.binance.listen_key_keepalive_s": _pos(3599),
    "execution.binance.poll_interval_s": _pos(3600),
    "execution.binance.order_check_s": _pos(_DAY),
    "execution.binance.backoff_initial_s": _pos(3600),
    "execution.binance.backoff_max_s": _pos(3600),
    "execution.binance.heartbeat_s": _pos(3600),
    "execution.binance.weight_limit_1m": Range(0, 1_000_000),
    "execution.binance.weight_slow_fraction": Range(0, 1, open_lo=True),
    "execution.binance.weight_stop_fraction": Range(0, 1, open_lo=True),
    "execution.binance.max_order_delay_s": Range(0, 3600),
    "execution.binance.default_retry_after_s": _pos(_DAY),
    "execution.binance.default_ban_s": _pos(7 * _DAY),
    "execution.binance.unknown_grace_s": Range(0, 3600),
    "execution.binance.lease_ttl_s": _pos(_DAY),
    "execution.binance.lease_renew_s": _pos(_DAY),
    "execution.binance.positions_check_s": Range(0, _DAY),
    "execution.capital_usdt": _pos(1e12),
    "execution.seed": Range(0, 2**63 - 1),
    "execution.maker_fee_bps": Range(0, 1000),
    "execution.taker_fee_bps": Range(0, 1000),
    "execution.maker_fill_rate_entry": Range(0, 1),
    "execution.maker_fill_rate_exit": Range(0, 1),
    "execution.entry_slippage_bps": Range(0, 1000),
    "execution.tp_slippage_bps": Range(0, 1000),
    "execution.sl_slippage_bps": Range(0, 1000),
    "execution.other_slippage_bps": Range(0, 1000),
    "execution.equity_snapshot_interval_s": Range(0, _DAY),
    "execution.drain_timeout_s": Range(0, 3600),
    "execution.exit_retry_initial_s": _pos(3600),
    "execution.exit_retry_max_s": _pos(3600),
    "execution.exit_stuck_after_s": _pos(_DAY),
    "logging.heartbeat_s": Range(0, _DAY),
    "warm_start.checkpoint_every_s": Range(0, 3600),
    "warm_start.max_gap_s": Range(0, 7 * _DAY),
    "warm_start.weight_share": Range(0, 1, open_lo=True),
    "warm_start.weight_limit_1m": Range(20, 100_000),
    "warm_start.max_requests_per_symbol": Range(1, 100_000),
    "external_factors.interval_s": Range(10, _DAY),
    "external_factors.timeout_s": Range(0.1, 60),
    "external_factors.max_age_intervals": Range(1, 1000),
    "scan.min_symbols": Range(0, 10_000),
    "statebus.invocation_timeout_s": Range(0.05, 60),
    "statebus.breaker_failures": Range(1, 1000),
    "statebus.reconnect_initial_s": _pos(3600),
    "statebus.reconnect_max_s": _pos(3600),
    "statebus.publish_interval_s": Range(0.05, 3600),
    "store.queue_capacity": Range(1, 10_000_000),
    "store.max_batch": Range(1, 1_000_000),
    "store.audit_fsync_interval_s": _pos(3600),
}
# A numeric key missing from RANGES (added without one) still gets this much sanity.
FALLBACK_RANGE = Range(-1e12, 1e12)


def numeric_keys(cls: type = Config, path: str = "") -> list[tuple[str, type]]:
    """(dotted key, int or float) of every numeric key of the config, in declaration order."""
    hints = typing.get_type_hints(cls)
    out: list[tuple[str, type]] = []
    for f in dataclasses.fields(cls):
        tp, key = hints[f.name], _join(path, f.name)
        if f.metadata.get("internal"):
            continue
        if dataclasses.is_dataclass(tp):
            out.extend(numeric_keys(tp, key))
        elif tp in (int, float):
            out.append((key, tp))
    return out


def range_problems(cfg: Config) -> list[str]:
    """One line per numeric key outside its range."""
    problems = []
    for key, _ in numeric_keys():
        value: Any = cfg
        for part in key.split("."):
            value = getattr(value, part)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # a type problem, reported while building
        rng = RANGES.get(key, FALLBACK_RANGE)
        if not rng.contains(value):
            problems.append(f"{key}: must be in {rng}, got {value!r}")
    return problems


def _nesting_problems(raw: Any) -> list[str]:
    """Values nested deeper than MAX_NESTING (iterative: the check itself must not recurse)."""
    stack: list[tuple[Any, str, int]] = [(raw, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_NESTING:
            return [f"{path.split('.')[0] or '<root>'}: nested more than {MAX_NESTING} levels"]
        if isinstance(value, Mapping):
            stack.extend((v, _join(path, str(k)), depth + 1) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, path, depth + 1) for v in value)
    return []


# --------------------------------------------------------------------------------------------
# Reload: diff and merge
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """What a reload would do: the config to swap in, what it changes, what it cannot."""

    config: Config
    applied: tuple[str, ...]
    needs_restart: tuple[str, ...]


def plan_reload(running: Config, new: Config) -> ReloadPlan:
    """Keep restart-only fields from ``running``; take every other field from ``new``."""
    applied: list[str] = []
    restart: list[str] = []
    merged = _merge(running, new, "", False, applied, restart)
    return ReloadPlan(merged, tuple(applied), tuple(restart))


def _merge(old: Any, new: Any, path: str, restart_only: bool,
           applied: list[str], restart: list[str]) -> Any:
    if dataclasses.is_dataclass(old) and not isinstance(old, type):
        changes = {}
        for f in dataclasses.fields(old):
            o, n = getattr(old, f.name), getattr(new, f.name)
            if f.metadata.get("internal"):
                changes[f.name] = n
                continue
            sub_restart = restart_only or bool(f.metadata.get("restart"))
            changes[f.name] = _merge(o, n, _join(path, f.name), sub_restart, applied, restart)
        return dataclasses.replace(old, **changes)
    if isinstance(old, Mapping) and isinstance(new, Mapping) and old != new:
        # Report plugin sections one by one ("plugins.settings.guardian"), not as a blob.
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                (restart if restart_only else applied).append(_join(path, str(key)))
        return old if restart_only else new
    if old == new:
        return old
    (restart if restart_only else applied).append(path)
    return old if restart_only else new


def config_to_jsonable(cfg: Config) -> dict[str, Any]:
    """The config as plain JSON-able data (for /status); secrets are never in the config."""
    return orjson.loads(orjson.dumps(dataclasses.asdict(cfg), default=_json_default))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return dict(obj)
    raise TypeError


def read_ops_token(cfg: Config, environ: Mapping[str, str] = os.environ) -> str | None:
    """The control token: DOLPHIND_OPS_TOKEN, else the file named by ops.token_file.

    Returns None when neither is set; the control endpoints are then disabled (never open).
    """
    token = environ.get("DOLPHIND_OPS_TOKEN", "").strip()
    if token:
        return token
    if cfg.ops.token_file:
        try:
            token = cfg.resolve(cfg.ops.token_file).read_text().strip()
        except OSError as exc:
            raise ConfigError([f"ops.token_file: cannot read ({exc.strerror or exc})"]) from None
        except UnicodeDecodeError:
            raise ConfigError(["ops.token_file: not UTF-8 text"]) from None
        if not token:
            raise ConfigError(["ops.token_file: the file is empty"])
        return token
    return None
