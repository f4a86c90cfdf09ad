"""Talk to a running daemon's ops HTTP API from the command line (stdlib only).

Where the daemon is: ``--url``, else ``[ops] listen`` of ``--config`` read WITHOUT validating
the rest of the file (so ``dolphind status`` needs no trading credentials, no data files and no
plugins installed), else ``http://127.0.0.1:9108``. The control token: ``DOLPHIND_OPS_TOKEN``,
else ``--token-file``, else ``[ops] token_file`` of the config.
"""

from __future__ import annotations

import json
import os
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:9108"
TOKEN_ENV = "DOLPHIND_OPS_TOKEN"
TOKEN_HEADER = "X-Dolphind-Token"


class ClientError(Exception):
    """A problem on our side (bad --url, unreadable config or token file): exit 2."""


class Unreachable(Exception):
    """The daemon did not answer: exit 1."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: Any  # parsed JSON, or the text when it is not JSON


def _ops_table(config: str | None) -> dict[str, Any]:
    """``[ops]`` of the config file, or {} when there is no file to read."""
    if config is None:
        return {}
    path = Path(config)
    if not path.exists():
        raise ClientError(f"{path}: no such config file (pass --url to skip it)")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError) as exc:
        raise ClientError(f"{path}: cannot read it as TOML ({exc})") from None
    ops = doc.get("ops", {})
    return ops if isinstance(ops, dict) else {}


def base_url(url: str | None, config: str | None) -> str:
    """The daemon's base URL (no trailing slash)."""
    if url:
        if not url.startswith(("http://", "https://")):
            url = "http://" + url
        return url.rstrip("/")
    listen = _ops_table(config).get("listen")
    if not listen:
        return DEFAULT_URL
    if not isinstance(listen, str) or ":" not in listen:
        raise ClientError(f"ops.listen: expected HOST:PORT, got {listen!r}")
    host, _, port = listen.rpartition(":")
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"  # a wildcard bind is reached on loopback
    if port == "0":
        raise ClientError("ops.listen uses port 0 (a free port picked at start): pass --url")
    return f"http://{host}:{port}"


def read_token(token_file: str | None, config: str | None,
               environ: os._Environ[str] | dict[str, str] = os.environ) -> str | None:
    """The control token, or None when none is configured."""
    if environ.get(TOKEN_ENV):
        return environ[TOKEN_ENV].strip()
    path_text = token_file or _ops_table(config).get("token_file") or ""
    if not path_text:
        return None
    path = Path(path_text)
    if not token_file and config and not path.is_absolute():
        path = Path(config).parent / path  # relative to the config, as the daemon reads it
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ClientError(f"token file {path}: cannot read it ({exc})") from None
    if not token:
        raise ClientError(f"token file {path} is empty")
    return token


def request(base: str, path: str, body: Any = None, token: str | None = None,
            timeout: float = 5.0) -> Answer:
    """GET (no body) or POST (a JSON body) ``path``; any HTTP status is an Answer."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data,
                                 method="GET" if body is None else "POST")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header(TOKEN_HEADER, token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - ops URL
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unreachable(f"dolphind is not answering at {base}: {reason}") from None
    try:
        return Answer(status, json.loads(raw))
    except ValueError:
        return Answer(status, raw.decode("utf-8", "replace"))
