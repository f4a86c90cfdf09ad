"""The config's shape: one frozen dataclass per ``dolphind.toml`` section, and ``Config``.

Defaults are the SPEC's defaults; every number lives here, not in the code. The comment block
above a field is its documentation (``dolphind config-reference`` renders it), so keep it there.

Field metadata the rest of the package reads:
- ``restart``: the field (or a whole section) cannot change under a running daemon; a reload
  keeps the running value and reports the key (``reload.py``).
- ``internal``: not a key of the file (``Config.source``, ``Config.sha256``).
- ``raw_table``: a table kept as read, for its owner to check (``[strategy.params]``: the
  strategy's parameters, checked by ``dolphind.alpha.profile``).
- ``extra_tables``: collects the section's unknown sub-tables (``[plugins.<name>]``: each
  plugin validates its own).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import orjson

RESTART = {"restart": True}


class ConfigError(Exception):
    """A config file that cannot be used; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


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
    settings: Mapping[str, Mapping[str, Any]] = field(
        default_factory=dict, metadata={"extra_tables": "plugin settings are a table"})


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
    # One account, one trader (venues/binance/lease.py): an exclusive flock on
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
    params: Mapping[str, Any] = field(default_factory=dict,
                                      metadata={**RESTART, "raw_table": True})
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



def config_to_jsonable(cfg: Config) -> dict[str, Any]:
    """The config as plain JSON-able data (for /status); secrets are never in the config."""
    return orjson.loads(orjson.dumps(dataclasses.asdict(cfg), default=_json_default))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return dict(obj)
    raise TypeError
