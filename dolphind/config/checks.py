"""Cross checks: values that contradict each other, real money that is not written out,
venue and feed settings that cannot work. Ranges of single keys are in ``ranges.py``."""

from __future__ import annotations

import os
from typing import Mapping

from dolphind.affinity import affinity_problems
from dolphind.config.schema import Config, WarmStartConfig
from dolphind.config.trading import MAINNET_HOSTS
from dolphind.config.values import parse_listen, parse_utc


def cross_checks(cfg: Config) -> list[str]:
    """One line per value that contradicts another, or cannot be used where it is going.

    The sections' owners check what config cannot see (``[strategy.params]``: the strategy);
    ``load.py`` runs their checks before these."""
    problems: list[str] = []
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
    b = cfg.statebus
    problems: list[str] = []
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
            if any(f"//{host}" in url for host in MAINNET_HOSTS):
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
