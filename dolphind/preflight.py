"""What a start would trip over, checked before anything starts: files, folders, plugins, addresses.

``load_config`` checks the file on its own; ``preflight`` checks it against the machine, the
way ``dolphind run`` would meet it: the data dir can be created and written, the store and audit
paths are not folders, every file the config names can be read and parsed, the plugins it
enables are installed, the ops address resolves (and, on a reload that moves it, can be bound).
``check-config``, ``run`` and every reload (SIGHUP, ``POST /reload``) call it, so a reload
refuses a config the next start would refuse instead of saying "needs restart" and leaving a
process manager to loop on it. Blocking (file system, imports): call it off the loop.

``secret_file_warnings`` names secret files that other users can read.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

from dolphind.config import Config, ConfigError, parse_listen, read_ops_token


def preflight(cfg: Config, running: Config | None = None) -> list[str]:
    """One line per problem a start with ``cfg`` would hit; ``running``: the config of the
    daemon being reloaded (its address is already bound by itself, so only a move is tried)."""
    problems: list[str] = []
    for check in (_data_dir, _named_files, _plugins, _token):
        try:
            problems.extend(check(cfg))
        except ConfigError as exc:
            problems.extend(exc.problems)
    problems.extend(_address(cfg, running))
    return problems


def secret_file_warnings(cfg: Config) -> list[str]:
    """Secret files (token, API keys) readable by the group or by others."""
    out = []
    for key, name in (("ops.token_file", cfg.ops.token_file),
                      ("execution.binance.secrets_file", cfg.execution.binance.secrets_file)):
        if not name:
            continue
        try:
            mode = cfg.resolve(name).stat().st_mode
        except OSError:
            continue  # unreadable: preflight reports it
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            out.append(f"{key}: {cfg.resolve(name)} is readable by other users (mode "
                       f"{stat.S_IMODE(mode):04o}); chmod 600 it")
    return out


def _writable_dir(path: Path) -> str | None:
    """Why ``path`` cannot be used (created if missing) as a folder to write in, or None."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable by this user"
    return None


def _data_dir(cfg: Config) -> list[str]:
    problems = []
    data = cfg.data_dir
    why = _writable_dir(data)
    if why:
        problems.append(f"data.dir: cannot write in {data} ({why})")
    for key, rel in (("store.path", cfg.store.path), ("store.audit_path", cfg.store.audit_path)):
        p = data / rel
        if p.is_dir():
            problems.append(f"{key}: {p} is a folder, not a file")
        elif p.exists() and not os.access(p, os.R_OK | os.W_OK):
            problems.append(f"{key}: {p} is not readable and writable by this user")
    if cfg.execution.venue == "binance":
        lease = cfg.resolve(cfg.execution.binance.lease_dir)
        why = _writable_dir(lease)
        if why:
            problems.append(f"execution.binance.lease_dir: cannot write in {lease} ({why})")
    return problems


def _named_files(cfg: Config) -> list[str]:
    problems = []
    if cfg.feed.kind == "replay":
        for p in cfg.replay.paths:
            if not cfg.resolve(p).exists():
                problems.append(f"replay.paths: {cfg.resolve(p)}: no such file or folder")
    if cfg.execution.exchange_info:
        from dolphind.orders.filters import load_exchange_info

        path = cfg.resolve(cfg.execution.exchange_info)
        try:
            load_exchange_info(path)
        except OSError as exc:
            problems.append(f"execution.exchange_info: cannot read {path} "
                            f"({exc.strerror or exc})")
        except ValueError as exc:  # FilterError, and orjson's errors
            problems.append(f"execution.exchange_info: {exc}")
        except (KeyError, TypeError, AttributeError) as exc:
            problems.append(f"execution.exchange_info: {path}: not an exchangeInfo document "
                            f"({type(exc).__name__}: {exc})")
    if cfg.execution.leverage_brackets:
        from dolphind.risk.brackets import load_leverage_brackets

        path = cfg.resolve(cfg.execution.leverage_brackets)
        try:
            load_leverage_brackets(path)
        except OSError as exc:
            problems.append(f"execution.leverage_brackets: cannot read {path} "
                            f"({exc.strerror or exc})")
        except ValueError as exc:  # BracketError
            problems.append(f"execution.leverage_brackets: {path}: {exc}")
    if cfg.feed.kind == "binance" and cfg.binance_feed.ca_file:
        from dolphind.feed.binance_ws import tls_context

        tls_context(cfg)  # ConfigError
    b = cfg.execution.binance
    if cfg.execution.venue == "binance" and b.secrets_file:
        from dolphind.venues.binance.credentials import CredentialsError, load_credentials

        try:
            load_credentials(b, cfg.resolve, environ={})
        except CredentialsError as exc:
            problems.append(str(exc))
    return problems


def _plugins(cfg: Config) -> list[str]:
    from dolphind.plugins import validate_plugin_settings

    return validate_plugin_settings(cfg)


def _token(cfg: Config) -> list[str]:
    read_ops_token(cfg)  # ConfigError
    return []


def _address(cfg: Config, running: Config | None) -> list[str]:
    try:
        host, port = parse_listen(cfg.ops.listen)
    except ValueError:
        return []  # reported by load_config
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        return [f"ops.listen: cannot resolve {host!r} ({exc})"]
    if running is None or running.ops.listen == cfg.ops.listen or port == 0:
        return []
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as exc:
            return [f"ops.listen: cannot listen on {cfg.ops.listen} ({exc.strerror or exc})"]
    return []
