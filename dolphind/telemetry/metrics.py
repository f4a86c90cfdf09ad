"""Every metric the daemon exports, on one registry that the app creates and passes down.

Nothing here uses prometheus_client's global default registry, so a test (or a second daemon
in the same process) gets a clean set. Names follow Prometheus conventions: `dolphind_` prefix,
base units in the name, counters end in `_total`; labels have few values (stage, channel,
symbol of the scan universe, rule), never order ids.
"""

from __future__ import annotations

import bisect
import math
import platform
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client import metrics as _prom_metrics
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

import dolphind

# Queue waits are sub-millisecond when healthy; the tail buckets catch a stalled consumer.
_WAIT_BUCKETS = (1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)


class Children(dict[Any, Any]):
    """A labelled metric's children, bound once per label value (or tuple of values).

    ``metric.labels(...)`` validates its arguments and takes a lock on every call (a few µs);
    on a per-order path ``children[value].inc()`` is one dict lookup after the first use."""

    def __init__(self, metric: Counter | Gauge | Histogram) -> None:
        super().__init__()
        self._metric = metric

    def __missing__(self, key: Any) -> Any:
        child = self._metric.labels(*key) if isinstance(key, tuple) else self._metric.labels(key)
        self[key] = child
        return child


class WaitHistogramChild:
    """One channel's wait histogram: a bisect and two additions per observation."""

    __slots__ = ("_bounds", "counts", "sum", "created")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, seconds: float) -> None:
        # The first bucket whose upper bound is >= the value (prometheus_client's rule).
        self.counts[bisect.bisect_left(self._bounds, seconds)] += 1
        self.sum += seconds


class WaitHistogram:
    """A histogram observed on the event loop's thread only, e.g.
    ``dolphind_channel_wait_seconds`` (labelled by channel) and
    ``dolphind_feed_bar_lateness_seconds`` (no labels).

    Every item a channel hands over is observed (several per bar in a backtest at full speed),
    and every late price of a feed that lags (thousands a second). prometheus_client's
    Histogram takes a lock twice per observation; this one just counts, and is read at scrape
    time as the same histogram (same name, help, buckets and samples: _bucket, _count, _sum,
    _created)."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...],
                 registry: CollectorRegistry, labelnames: tuple[str, ...] = ("channel",)) -> None:
        self.name = name
        self.documentation = documentation
        # What README's metrics table reads from prometheus_client's metric objects.
        self._name, self._type, self._documentation = name, "histogram", documentation
        self._labelnames = labelnames
        self._bounds = tuple(float(b) for b in buckets) + (math.inf,)
        self._children: dict[tuple[str, ...], WaitHistogramChild] = {}
        registry.register(self)

    def labels(self, *values: str) -> WaitHistogramChild:
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self._labelnames):
                raise ValueError(f"{self.name}: labels {self._labelnames}, got {values}")
            child = self._children[values] = WaitHistogramChild(self._bounds)
        return child

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation,
                                      labels=list(self._labelnames))]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation,
                                       labels=list(self._labelnames))
        for values, child in list(self._children.items()):
            counts, total = list(child.counts), child.sum  # a scrape runs in a worker thread
            acc = 0.0
            buckets = []
            for bound, n in zip(self._bounds, counts):
                acc += n
                buckets.append((floatToGoString(bound), acc))
            family.add_metric(list(values), buckets, total)
            if getattr(_prom_metrics, "_use_created", True):
                family.samples.append(Sample(f"{self.name}_created",
                                             dict(zip(self._labelnames, values)),
                                             child.created))
        yield family


@dataclass(frozen=True, slots=True)
class _BoundChannelMetrics:
    dropped: Counter
    wait: WaitHistogramChild


class ChannelMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.depth = Gauge("dolphind_channel_depth", "Items waiting in a channel.",
                           ["channel"], registry=registry)
        self.capacity = Gauge("dolphind_channel_capacity", "Capacity of a channel.",
                              ["channel"], registry=registry)
        self.dropped = Counter("dolphind_channel_dropped_total",
                               "Items replaced by a newer one in a drop-oldest channel.",
                               ["channel"], registry=registry)
        self.wait = WaitHistogram("dolphind_channel_wait_seconds",
                                  "Time an item waited in a channel before it was taken.",
                                  _WAIT_BUCKETS, registry)

    def labels(self, channel: str) -> _BoundChannelMetrics:
        return _BoundChannelMetrics(self.dropped.labels(channel), self.wait.labels(channel))


# Intent-to-ack / intent-to-fill in paper are sub-millisecond; live acks take tens of ms.
_LATENCY_BUCKETS = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0, 2.5, 5.0)
_SLIPPAGE_BPS_BUCKETS = (-10.0, -5.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0)


class ExecutionMetrics:
    """Orders, fills, money, risk rails and the store (SPEC §4-§6)."""

    def __init__(self, r: CollectorRegistry, task_crashes: Counter) -> None:
        # Metrics.task_crashes, shared: the store's checkpointer and the audit log's writer
        # count their crashes there (they receive this group, not the whole Metrics).
        self.task_crashes = task_crashes
        self.intents = Counter("dolphind_execution_intents_total",
                               "Order intents taken by the execution stage, by outcome.",
                               ["outcome"], registry=r)
        self.orders = Counter("dolphind_orders_total",
                              "Orders that entered a state (new, acked, filled, ...).",
                              ["state"], registry=r)
        self.open_orders = Gauge("dolphind_open_orders", "Orders not yet in a final state.",
                                 registry=r)
        self.fills = Counter("dolphind_fills_total", "Fills by side and liquidity.",
                             ["side", "liquidity"], registry=r)
        self.fees = Counter("dolphind_fees_usdt_total", "Fees paid.", registry=r)
        # Counters only go up: slippage against us and in our favour are counted apart
        # (net slippage = paid - gained); a better-than-reference fill must not crash the stage.
        self.slippage = Counter("dolphind_slippage_usdt_total",
                                "Slippage against the decision price, by direction (paid: "
                                "worse than the reference price, gained: better).",
                                ["direction"], registry=r)
        self.slippage_bps = Histogram("dolphind_fill_slippage_bps",
                                      "Fill slippage against the decision price, bps.",
                                      buckets=_SLIPPAGE_BPS_BUCKETS, registry=r)
        self.notional = Counter("dolphind_traded_notional_usdt_total", "Notional filled.",
                                registry=r)
        self.position_notional = Gauge("dolphind_position_notional_usdt",
                                       "Signed notional of the open position per symbol.",
                                       ["symbol"], registry=r)
        self.gross_exposure = Gauge("dolphind_gross_exposure_usdt",
                                    "Sum of |position notional| at the latest marks.", registry=r)
        self.realised_pnl = Gauge("dolphind_realised_pnl_usdt",
                                  "Realised PnL since the store was created (before fees).",
                                  registry=r)
        self.unrealised_pnl = Gauge("dolphind_unrealised_pnl_usdt",
                                    "Unrealised PnL of open positions at the latest marks.",
                                    registry=r)
        self.cash = Gauge("dolphind_cash_usdt", "Wallet balance (capital + realised - fees).",
                          registry=r)
        self.equity = Gauge("dolphind_equity_usdt", "Cash plus unrealised PnL.", registry=r)
        self.peak_equity = Gauge("dolphind_peak_equity_usdt", "Highest equity seen.",
                                 registry=r)
        self.drawdown = Gauge("dolphind_drawdown_ratio",
                              "1 - equity / peak equity (0.12 = 12% below the peak).",
                              registry=r)
        self.risk_rejections = Counter("dolphind_risk_rejections_total",
                                       "Orders refused by a risk rail, by rule.", ["rule"],
                                       registry=r)
        self.router_rejections = Counter("dolphind_router_rejections_total",
                                         "Intents the router could not turn into an order.",
                                         ["reason"], registry=r)
        self.illegal_transitions = Counter("dolphind_order_illegal_transitions_total",
                                           "Order updates refused by the state machine.",
                                           registry=r)
        self.veto_overruns = Counter("dolphind_risk_veto_overruns_total",
                                     "Plugin veto hooks that overran plugins.veto_budget_ms "
                                     "(the entry was refused).", registry=r)
        self.breaker_state = Gauge("dolphind_venue_breaker_state",
                                   "Venue breaker: 0 closed, 1 half-open, 2 open.", registry=r)
        self.intent_to_ack = Histogram("dolphind_intent_to_ack_seconds",
                                       "From taking an intent to the venue's acknowledgement.",
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.intent_to_fill = Histogram("dolphind_intent_to_fill_seconds",
                                        "From taking an intent to its fill being committed.",
                                        buckets=_LATENCY_BUCKETS, registry=r)
        self.exit_retries = Counter("dolphind_exit_retries_total",
                                    "Exits (reduce-only orders) sent again after a transient "
                                    "refusal (rate limit, ban, breaker, 5xx, timeout).",
                                    registry=r)
        self.exits_stuck = Gauge("dolphind_exits_stuck",
                                 "Symbols whose exit has not got through for longer than "
                                 "execution.exit_stuck_after_s (still being retried).",
                                 registry=r)
        self.foreign_positions = Gauge("dolphind_foreign_positions",
                                       "Venue positions (symbols) this daemon did not open, "
                                       "found at reconciliation and left alone.", registry=r)
        self.foreign_orders = Gauge("dolphind_foreign_orders",
                                    "Open venue orders this daemon did not send (not its "
                                    "client id prefix, not in its store), left alone.",
                                    registry=r)
        self.reconcile_diffs = Counter("dolphind_reconcile_differences_total",
                                       "Store/venue differences corrected at reconciliation.",
                                       ["kind"], registry=r)
        # Store and audit
        self.store_commits = Counter("dolphind_store_commits_total",
                                     "SQLite transactions committed by the writer.", registry=r)
        self.store_writes = Counter("dolphind_store_writes_total",
                                    "Write operations committed by the writer.", registry=r)
        self.store_commit_seconds = Histogram("dolphind_store_commit_seconds",
                                              "Time to execute and commit one batch.",
                                              buckets=_LATENCY_BUCKETS, registry=r)
        self.store_failures = Counter("dolphind_store_failures_total",
                                      "Store writer failures (the store stops accepting writes).",
                                      registry=r)
        self.audit_lines = Counter("dolphind_audit_lines_total", "Lines appended to the audit log.",
                                   registry=r)
        self.audit_recovered = Counter("dolphind_audit_recovered_total",
                                       "Orders the store had and the audit log did not (a "
                                       "kill between commit and audit write), recorded at "
                                       "restart from the store as order.recovered.",
                                       registry=r)
        self.audit_backlog = Gauge("dolphind_audit_backlog",
                                   "Audit records waiting to be written.", registry=r)


class VenueMetrics:
    """The live venue (SPEC §5): request budget, bans, errors, user stream, lease."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.loop_crashes = Counter("dolphind_venue_loop_crashes_total",
                                    "Venue background loops (user stream, polling, lease, "
                                    "maintenance) that raised and were restarted, by loop.",
                                    ["loop"], registry=r)
        self.requests = Counter("dolphind_venue_requests_total",
                                "REST requests sent to the venue, by kind and outcome.",
                                ["kind", "outcome"], registry=r)
        self.weight_used = Gauge("dolphind_venue_request_weight_used",
                                 "Request weight used in the current minute "
                                 "(X-MBX-USED-WEIGHT-1M).", registry=r)
        self.weight_limit = Gauge("dolphind_venue_request_weight_limit",
                                  "Request weight allowed per minute (exchangeInfo).",
                                  registry=r)
        self.order_count = Gauge("dolphind_venue_order_count",
                                 "Orders counted by the venue (X-MBX-ORDER-COUNT-*), by "
                                 "interval.", ["interval"], registry=r)
        self.order_limit = Gauge("dolphind_venue_order_limit",
                                 "Orders allowed per interval (exchangeInfo).", ["interval"],
                                 registry=r)
        self.rate_delay = Counter("dolphind_venue_rate_delay_seconds_total",
                                  "Time requests waited for the request budget.", registry=r)
        self.rate_refusals = Counter("dolphind_venue_rate_refusals_total",
                                     "Requests not sent because of the budget, a back-off or "
                                     "a ban, by reason.", ["reason"], registry=r)
        self.backoff_until = Gauge("dolphind_venue_backoff_until_seconds",
                                   "Unix time until which requests are held back after a "
                                   "429/-1003 (0: none).", registry=r)
        self.banned_until = Gauge("dolphind_venue_banned_until_seconds",
                                  "Unix time a 418 IP ban ends (0: not banned).", registry=r)
        self.errors = Counter("dolphind_venue_errors_total",
                              "Venue error answers by Binance code (or http status / "
                              "timeout / network).", ["code"], registry=r)
        self.clock_offset = Gauge("dolphind_venue_clock_offset_seconds",
                                  "Venue server time minus local time.", registry=r)
        self.clock_resyncs = Counter("dolphind_venue_clock_resyncs_total",
                                     "Clock offset measurements, by cause.", ["cause"],
                                     registry=r)
        self.listen_key_renewals = Counter("dolphind_venue_listen_key_renewals_total",
                                           "listenKey keep-alives and re-creations, by outcome.",
                                           ["outcome"], registry=r)
        self.user_stream_connected = Gauge("dolphind_venue_user_stream_connected",
                                           "1 while the user-data stream is connected.",
                                           registry=r)
        self.user_stream_reconnects = Counter("dolphind_venue_user_stream_reconnects_total",
                                              "User-data stream (re)connections, by reason.",
                                              ["reason"], registry=r)
        self.rest_polling = Gauge("dolphind_venue_rest_polling",
                                  "1 while REST polling stands in for the user stream.",
                                  registry=r)
        self.fills_recovered = Counter("dolphind_venue_fills_recovered_total",
                                       "Fills found by REST that the user stream had not "
                                       "delivered.", registry=r)
        self.duplicate_fills = Counter("dolphind_venue_duplicate_fills_total",
                                       "Fill reports dropped because the trade id was already "
                                       "seen.", registry=r)
        self.reconciled = Gauge("dolphind_venue_reconciled",
                                "1 once the venue has been reconciled (entries allowed).",
                                registry=r)
        self.lease_held = Gauge("dolphind_venue_lease_held",
                                "1 while this daemon holds the account lease.", registry=r)
        self.fenced = Counter("dolphind_venue_fenced_total",
                              "Orders refused because another daemon holds the account.",
                              registry=r)


class Metrics:
    """The daemon's metrics. Create one per daemon; pass it (or a part of it) down."""

    def __init__(self, registry: CollectorRegistry | None = None, *,
                 risk_rules: Iterable[str] = ()) -> None:
        """``risk_rules``: the rails' rule names (``dolphind.risk.rails.RULES``, passed by the
        wiring: telemetry sits below risk and may not import it), exported at 0 from the start."""
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)

        self.build_info = Gauge("dolphind_build_info", "Build information; always 1.",
                                ["version", "python"], registry=r)
        self.build_info.labels(dolphind.__version__, platform.python_version()).set(1)
        self.start_time = Gauge("dolphind_start_time_seconds",
                                "Unix time the daemon started.", registry=r)
        self.config_info = Gauge("dolphind_config_info",
                                 "The running config (hash of the file); always 1.",
                                 ["config_hash", "mode"], registry=r)
        self.config_reloads = Counter("dolphind_config_reloads_total",
                                      "Config reloads applied (SIGHUP or POST /reload).",
                                      registry=r)
        self.config_reload_failures = Counter(
            "dolphind_config_reload_failures_total",
            "Config reloads refused because the new file was invalid.", registry=r)
        self.trading_halted = Gauge("dolphind_trading_halted",
                                    "1 while the kill switch is on (no new entries).", registry=r)
        self.health_score = Gauge("dolphind_health_score",
                                  "Weighted health score in [0, 1] (GREEN >= 0.8).", registry=r)
        self.ready = Gauge("dolphind_ready", "1 while /readyz passes (every readiness check ok).",
                           registry=r)

        # Stages and supervision
        self.stage_heartbeat = Gauge("dolphind_stage_heartbeat_timestamp_seconds",
                                     "Unix time of a stage's last heartbeat.", ["stage"],
                                     registry=r)
        self.stage_up = Gauge("dolphind_stage_up", "1 while a stage's task is running.",
                              ["stage"], registry=r)
        self.stage_restarts = Counter("dolphind_stage_restarts_total",
                                      "Times a crashed stage was restarted.", ["stage"],
                                      registry=r)
        self.stage_errors = Counter("dolphind_stage_errors_total",
                                    "Exceptions that ended a stage's run.", ["stage"],
                                    registry=r)
        self.task_crashes = Counter("dolphind_task_crashes_total",
                                    "Exceptions that ended a task a component runs itself "
                                    "(not a supervised stage: the store's checkpointer, the "
                                    "audit writer, the Command Center's poller), by task.",
                                    ["task"], registry=r)
        self.channels = ChannelMetrics(r)

        # Bars (the replay or live feed's output)
        self.bars = Counter("dolphind_bars_total", "Bars published by the feed.", registry=r)
        self.bar_timestamp = Gauge("dolphind_bar_timestamp_seconds",
                                   "Market time (bar open) of the latest bar.", registry=r)
        self.bar_symbols = Gauge("dolphind_bar_symbols",
                                 "Symbols with a price in the latest bar.", registry=r)
        self.bar_close = Gauge("dolphind_bar_close_price",
                               "Close of the latest bar per symbol (quote currency).",
                               ["symbol"], registry=r)
        self.bar_seq_gaps = Counter("dolphind_bar_sequence_gaps_total",
                                    "Bars missing between two consecutive bar events.",
                                    registry=r)
        self.replay_loops = Counter("dolphind_replay_loops_total",
                                    "Times the replay feed started over from the beginning.",
                                    registry=r)
        self.replay_done = Gauge("dolphind_replay_done",
                                 "1 when the replay feed has emitted all its bars.", registry=r)
        self.funding_rate = Gauge("dolphind_funding_rate",
                                  "Latest funding rate seen per symbol (fraction per 8 h).",
                                  ["symbol"], registry=r)

        # Feed (the live Binance WebSocket feed, SPEC §1). Per-frame counts are kept as plain
        # integers by the reader and added here about once a second: a Prometheus counter
        # takes a lock per increment, which the reader cannot afford per frame.
        self.feed_messages = Counter("dolphind_feed_messages_total",
                                     "WebSocket frames parsed by stream kind.", ["kind"],
                                     registry=r)
        self.feed_bytes = Counter("dolphind_feed_bytes_total",
                                  "Bytes of parsed WebSocket frames by stream kind.", ["kind"],
                                  registry=r)
        self.feed_bad_frames = Counter("dolphind_feed_bad_frames_total",
                                       "Frames dropped because they failed to parse or validate.",
                                       ["reason"], registry=r)
        self.feed_duplicates = Counter("dolphind_feed_duplicate_frames_total",
                                       "Frames already seen (overlapping connections), dropped.",
                                       ["kind"], registry=r)
        self.feed_reconnects = Counter("dolphind_feed_reconnects_total",
                                       "Connections re-established, by connection and reason.",
                                       ["conn", "reason"], registry=r)
        self.feed_connect_failures = Counter("dolphind_feed_connect_failures_total",
                                             "Connection attempts that failed.", ["conn"],
                                             registry=r)
        self.feed_gaps = Counter("dolphind_feed_gaps_total",
                                 "Data gaps (a connection lost or stalled), by reason.",
                                 ["reason"], registry=r)
        self.feed_connected = Gauge("dolphind_feed_connected",
                                    "1 while a feed connection is open and not stalled.",
                                    ["conn"], registry=r)
        self.feed_last_message_age = Gauge("dolphind_feed_last_message_age_seconds",
                                           "Seconds since a connection's last frame.", ["conn"],
                                           registry=r)
        self.feed_silent_streams = Gauge("dolphind_feed_silent_streams",
                                         "Subscribed streams with no frame within the grace "
                                         "period.", ["conn"], registry=r)
        self.feed_stream_silence_alarms = Counter(
            "dolphind_feed_stream_silence_alarms_total",
            "Times a subscribed stream stayed silent past the grace period.", ["kind"],
            registry=r)
        self.feed_late_frames = Counter("dolphind_feed_late_frames_total",
                                        "Prices for a bar that had already closed (not merged).",
                                        registry=r)
        self.feed_bar_lateness = WaitHistogram("dolphind_feed_bar_lateness_seconds",
                                               "How far before its bar's close a late price "
                                               "was.", (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                                                        10, 30), r, labelnames=())
        self.feed_bars_skipped = Counter("dolphind_feed_bars_skipped_total",
                                         "Bar windows not emitted because the feed had a gap.",
                                         registry=r)
        self.feed_parse_seconds = Histogram("dolphind_feed_parse_seconds",
                                            "Time from frame read to state update (1 frame in "
                                            "64 is timed).",
                                            buckets=(2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 5e-4,
                                                     1e-3, 5e-3), registry=r)

        # Plugins
        self.plugin_failures = Counter("dolphind_plugin_failures_total",
                                       "Exceptions raised by plugin hooks.", ["plugin"],
                                       registry=r)
        self.plugin_enabled = Gauge("dolphind_plugin_enabled",
                                    "1 while a plugin is loaded and not disabled.", ["plugin"],
                                    registry=r)

        # Control plane (dolphind/control.py)
        self.control_actions = Counter("dolphind_control_actions_total",
                                       "Control-plane actions (halt, throttle, incident, ...).",
                                       ["action"], registry=r)
        self.control_listener_failures = Counter(
            "dolphind_control_listener_failures_total",
            "Control-plane subscribers that raised (the action still took effect).", registry=r)
        self.risk_multiplier = Gauge("dolphind_risk_multiplier",
                                     "Factor in (0, 1] applied to new risk; 1 = none set.",
                                     registry=r)
        self.risk_multiplier.set(1.0)
        self.order_rate_factor = Gauge("dolphind_order_rate_factor",
                                       "Factor in (0, 1] on the order-rate limit; 1 = no "
                                       "throttle.", registry=r)
        self.order_rate_factor.set(1.0)

        # Eigenscan (SPEC §2)
        self.scans = Counter("dolphind_scans_total", "Scan records produced.", registry=r)
        self.scan_number = Gauge("dolphind_scan_number", "scan_number of the latest scan.",
                                 registry=r)
        self.scan_seconds = Histogram(
            "dolphind_scan_seconds", "Time to compute one scan (all four windows).",
            buckets=(5e-5, 1e-4, 2e-4, 4e-4, 8e-4, 1.6e-3, 3.2e-3, 6.4e-3, 0.0128, 0.0256, 0.1),
            registry=r)
        self.scan_symbols = Gauge("dolphind_scan_symbols", "Symbols used by the latest scan.",
                                  registry=r)
        self.scan_lambda_max = Gauge("dolphind_scan_lambda_max",
                                     "Largest correlation eigenvalue per window (NaN while cold).",
                                     ["window"], registry=r)
        self.scan_iterations = Gauge("dolphind_scan_iterations",
                                     "Eigen-solver iterations used by the latest scan per window.",
                                     ["window"], registry=r)
        self.scan_fallbacks = Counter("dolphind_scan_fallbacks_total",
                                      "Scans where the fast eigen-solver handed over to the "
                                      "robust fallback (close top eigenvalues).", registry=r)
        self.vel_div = Gauge("dolphind_vel_div", "Latest vel_div = v50 - v750 (NaN while cold).",
                             registry=r)
        # Warm-up and warm start (issue 18): can the strategy trade yet, and how far along
        self.strategy_can_trade = Gauge(
            "dolphind_strategy_can_trade", "1 once every scan window is warm (vel_div can be "
            "formed and an entry is possible), else 0.", registry=r)
        self.scan_window_fill = Gauge(
            "dolphind_scan_window_fill_ratio", "Returns in hand / returns needed per scan window "
            "(1 = warm).", ["window"], registry=r)
        self.first_entry_eta = Gauge(
            "dolphind_first_entry_eta_seconds", "Estimated wall seconds until the slowest window "
            "is warm (0 once the strategy can trade; NaN before the bar pace is known).",
            registry=r)
        self.warm_start_bars = Counter(
            "dolphind_warm_start_bars_total", "History bars put into the scan before the first "
            "new bar, by source (checkpoint, rest, replay: a resumed replay's gap from its data, "
            "carried: a gap bar with no price fetched, "
            "its last price carried forward), and seam: symbol-bars of the first new bars "
            "where the last restored price stood in until the symbol's first new trade.",
            ["source"], registry=r)
        self.history_rest_weight = Counter(
            "dolphind_history_rest_weight_total", "REST request weight spent fetching history "
            "(aggTrades for gap fills and backfills).", registry=r)

        # Alpha (SPEC §3)
        self.signals = Counter("dolphind_signals_total",
                               "Alpha decisions per bar by outcome (entered, no_signal, gate "
                               "that rejected the entry, ...).", ["outcome"], registry=r)
        self.alpha_seconds = Histogram(
            "dolphind_alpha_decision_seconds", "Time from scan record in to decision out.",
            buckets=(1e-5, 2.5e-5, 5e-5, 1e-4, 2e-4, 4e-4, 8e-4, 1.6e-3, 5e-3), registry=r)
        self.intents = Counter("dolphind_intents_total", "Order intents emitted by kind.",
                               ["kind"], registry=r)
        self.posture = Gauge("dolphind_posture", "1 for the current posture, 0 for the others.",
                             ["posture"], registry=r)
        self.posture_rm = Gauge("dolphind_posture_rm", "Survival stack risk multiplier Rm.",
                                registry=r)
        self.acb_boost = Gauge("dolphind_acb_boost", "ACB v6 base boost (1.0 = no factors).",
                               registry=r)
        self.regime_size_mult = Gauge("dolphind_regime_size_mult",
                                      "ACB per-bar regime size multiplier.", registry=r)

        # State bus
        self.statebus_writes = Counter("dolphind_statebus_writes_total",
                                       "Writes to the state bus by outcome.", ["outcome"],
                                       registry=r)
        self.statebus_events = Counter(
            "dolphind_statebus_events_total", "Hazelcast state bus events: pushes, breaker "
            "opened/closed, file-only writes, reconnections, republished keys, inputs.",
            ["event"], registry=r)
        self.statebus_file_only = Gauge(
            "dolphind_statebus_file_only",
            "1 while the state bus breaker is open (file-only mode, bible §15.6).", registry=r)

        # Execution, risk, store
        self.execution = ExecutionMetrics(r, self.task_crashes)
        # The live venue (binance)
        self.venue = VenueMetrics(r)

        # HTTP
        self.http_requests = Counter("dolphind_http_requests_total",
                                     "Ops HTTP requests by route and status.",
                                     ["route", "status"], registry=r)
        self._zero_alerted_children(risk_rules)

    def _zero_alerted_children(self, risk_rules: Iterable[str]) -> None:
        """Export the children that alert rules and dashboards read at 0 from the start.

        A labelled counter has no series until its first event, and ``increase()`` over a
        series born at 1 sees no increase: the first rejection, gap or incident would not fire
        its alert and its dashboard panel would say "No data" instead of 0."""
        for rule in risk_rules:
            self.execution.risk_rejections.labels(rule)
        for kind in ("position", "order_state", "order_never_sent", "venue_order_found",
                     "venue_order_adopted", "stale_order_cancelled"):
            self.execution.reconcile_diffs.labels(kind)
        for reason in ("closed", "error", "stall", "requested"):
            self.feed_gaps.labels(reason)
        for action in ("halt", "resume", "release_halt", "flatten", "incident",
                       "reconnect_feed", "risk_multiplier", "throttle"):
            self.control_actions.labels(action)
        self.feed_bar_lateness.labels()  # the live feed's late prices (empty in replay)
