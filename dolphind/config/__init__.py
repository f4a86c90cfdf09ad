"""`dolphind.toml` -> frozen dataclasses: the config package (base layer: imports only the base).

- ``schema``: the sections and ``Config`` (the comments above fields are the reference docs);
- ``coerce``: TOML tables -> dataclasses, every problem collected (generic: alpha and the
  plugins check their own tables with it);
- ``checks``, ``ranges``: cross checks and every numeric key's range;
- ``trading``: where a config sends orders (real money or not);
- ``values``: parsers of string values (listen address, UTC times);
- ``reload``: what a reload changes and what needs a restart;
- ``secrets``: the control token; ``load``: the file -> ``Config``.

``[strategy.params]`` belongs to the strategy: ``dolphind.alpha.profile`` checks it and offers
the loaders the daemon's entry points use.
"""

from dolphind.config.checks import cross_checks
from dolphind.config.coerce import MAX_NESTING, build_dataclass, join_key
from dolphind.config.load import SectionCheck, config_from_dict, load_config, validate
from dolphind.config.ranges import FALLBACK_RANGE, RANGES, Range, numeric_keys, range_problems
from dolphind.config.reload import ReloadPlan, plan_reload
from dolphind.config.schema import (RESTART, BinanceFeedConfig, BinanceVenueConfig, BookConfig,
                                    ChannelsConfig, Config, ConfigError, DataConfig,
                                    ExecutionConfig, ExternalFactorsConfig, FeedConfig,
                                    LoggingConfig, OpsConfig, PluginsConfig, ReplayConfig,
                                    RiskConfig, ScanConfig, StateBusConfig, StoreConfig,
                                    StrategyConfig, SupervisionConfig, WarmStartConfig,
                                    config_to_jsonable)
from dolphind.config.secrets import read_ops_token
from dolphind.config.trading import describe_trading, trading_target
from dolphind.config.values import parse_listen, parse_utc

__all__ = [
    "FALLBACK_RANGE", "MAX_NESTING", "RANGES", "RESTART", "BinanceFeedConfig",
    "BinanceVenueConfig", "BookConfig", "ChannelsConfig", "Config", "ConfigError", "DataConfig",
    "ExecutionConfig", "ExternalFactorsConfig", "FeedConfig", "LoggingConfig", "OpsConfig",
    "PluginsConfig", "Range", "ReloadPlan", "ReplayConfig", "RiskConfig", "ScanConfig",
    "SectionCheck", "StateBusConfig", "StoreConfig", "StrategyConfig", "SupervisionConfig",
    "WarmStartConfig", "build_dataclass", "config_from_dict", "config_to_jsonable",
    "cross_checks", "describe_trading", "join_key", "load_config", "numeric_keys", "parse_listen",
    "parse_utc", "plan_reload", "range_problems", "read_ops_token", "trading_target", "validate",
]
