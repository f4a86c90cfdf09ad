"""`dolphind.toml` -> frozen dataclasses.

Loading collects every problem in the file (not just the first) as ``ConfigError`` lines that
name the key path and the reason, so `dolphind check-config` can print them all at once.
Unknown keys are errors: a typo in a risk limit must not silently fall back to a default.

Fields whose change cannot be applied to a running daemon carry ``metadata={"restart": True}``
(directly, or inherited from their section). A reload keeps the running value of those fields,
applies everything else in one assignment, and reports the restart-only keys it did not apply.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tomllib
import types
import typing
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


# --------------------------------------------------------------------------------------------
# Sections. Defaults are the SPEC's defaults; every number lives here, not in the code.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpsConfig:
    """The HTTP ops surface (SPEC §9)."""

    listen: str = field(default="127.0.0.1:9108", metadata=RESTART)
    # A file holding the control token; DOLPHIND_OPS_TOKEN in the environment wins over it.
    token_file: str = ""


@dataclass(frozen=True, slots=True)
class DataConfig:
    """Where the daemon writes (store, audit log, scan files, plugin state)."""

    dir: str = field(default="var", metadata=RESTART)


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    """The replay feed: historical OHLCV files emitted as bars."""

    paths: tuple[str, ...] = field(default=("data/sample",), metadata=RESTART)
    # Market seconds per wall second; 0 means as fast as the consumers take them.
    speed: float = 60.0
    loop: bool = False
    # Only the first `max_bars` bars of the data (0 = all); handy for short demos and tests.
    max_bars: int = field(default=0, metadata=RESTART)


@dataclass(frozen=True, slots=True)
class FeedConfig:
    kind: Literal["replay", "binance"] = field(default="replay", metadata=RESTART)
    bar_seconds: int = field(default=5, metadata=RESTART)
    # A symbol with no new price for this many bars is reported absent (NaN) downstream.
    max_stale_bars: int = 12


@dataclass(frozen=True, slots=True)
class ChannelsConfig:
    """Capacities of the bounded queues between stages."""

    bars: int = field(default=64, metadata=RESTART)


@dataclass(frozen=True, slots=True)
class SupervisionConfig:
    """How crashed stages are restarted (crash-only: too many restarts end the process)."""

    max_restarts: int = 5
    restart_window_s: float = 60.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    # A stage whose heartbeat is older than this is reported unhealthy.
    heartbeat_timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    # "auto": readable key=value on a terminal, JSON lines otherwise.
    format: Literal["auto", "json", "console"] = "auto"


@dataclass(frozen=True, slots=True)
class StateBusConfig:
    kind: Literal["memory"] = field(default="memory", metadata=RESTART)


@dataclass(frozen=True, slots=True)
class PluginsConfig:
    """Entry-point plugins (SPEC §7). Per-plugin sections are validated by the plugin itself."""

    enabled: tuple[str, ...] = ()
    # Start-up fails unless these are installed, e.g. "dolphind-guardian>=1" (distribution>=major).
    required: tuple[str, ...] = field(default=(), metadata=RESTART)
    # A plugin whose hooks fail this many times in a row is disabled (never fatal).
    max_failures: int = 3
    veto_budget_ms: float = 5.0
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Config:
    mode: Literal["paper", "live", "backtest"] = field(default="paper", metadata=RESTART)
    shutdown_timeout_s: float = 10.0
    ops: OpsConfig = OpsConfig()
    data: DataConfig = DataConfig()
    feed: FeedConfig = FeedConfig()
    replay: ReplayConfig = ReplayConfig()
    channels: ChannelsConfig = ChannelsConfig()
    supervision: SupervisionConfig = SupervisionConfig()
    logging: LoggingConfig = LoggingConfig()
    statebus: StateBusConfig = StateBusConfig()
    plugins: PluginsConfig = PluginsConfig()
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
    cfg = config_from_dict(raw)
    return dataclasses.replace(
        cfg, source=str(p.resolve()), sha256=hashlib.sha256(raw_bytes).hexdigest()
    )


def config_from_dict(raw: Mapping[str, Any]) -> Config:
    problems: list[str] = []
    cfg = _build(Config, raw, "", problems)
    if not problems:
        problems.extend(_cross_checks(cfg))
    if problems:
        raise ConfigError(problems)
    return cfg


def _cross_checks(cfg: Config) -> list[str]:
    problems = []
    try:
        parse_listen(cfg.ops.listen)
    except ValueError as exc:
        problems.append(f"ops.listen: {exc}")
    if cfg.shutdown_timeout_s <= 0:
        problems.append("shutdown_timeout_s: must be > 0")
    if cfg.replay.speed < 0:
        problems.append("replay.speed: must be >= 0 (0 = as fast as possible)")
    if cfg.feed.bar_seconds <= 0:
        problems.append("feed.bar_seconds: must be > 0")
    if cfg.channels.bars < 1:
        problems.append("channels.bars: must be >= 1")
    s = cfg.supervision
    if s.max_restarts < 0:
        problems.append("supervision.max_restarts: must be >= 0")
    if s.backoff_initial_s <= 0 or s.backoff_max_s < s.backoff_initial_s:
        problems.append("supervision: need 0 < backoff_initial_s <= backoff_max_s")
    if cfg.feed.kind == "replay" and not cfg.replay.paths:
        problems.append("replay.paths: at least one file or folder is needed for feed.kind = 'replay'")
    if cfg.feed.kind == "binance":
        problems.append("feed.kind: 'binance' (the live WebSocket feed) is not in this build yet")
    if cfg.mode == "live":
        problems.append("mode: 'live' needs the binance venue, which this build does not have yet")
    for name in cfg.plugins.enabled:
        if not name.isidentifier():
            problems.append(f"plugins.enabled: {name!r} is not a plugin name")
    return problems


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
        return value
    if isinstance(tp, types.UnionType) or origin is typing.Union:  # pragma: no cover
        return value
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _tname(value: Any) -> str:
    return {dict: "a table", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


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
        if not token:
            raise ConfigError(["ops.token_file: the file is empty"])
        return token
    return None
