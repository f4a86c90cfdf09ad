"""Binance API credentials: where the key and secret come from, and keeping them out of sight.

Keys come only from the environment or a secrets file; they are never logged, never in
``status()``; the account is named by a hash of the key (``Credentials.account``). listenKeys
(aiohttp's handshake errors carry the URL) are secrets too: ``Redactor`` removes all of them
from any text bound for the log or /status.
"""

from __future__ import annotations

import collections
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from dolphind.config import BinanceVenueConfig
from dolphind.venues.binance.lease import account_id
from dolphind.venues.venue import VenueStartupError

# A listenKey in a URL (path segment after /ws/, or the listenKey= parameter).
_LISTEN_KEY_RE = re.compile(r"(/ws/|listenKey=)[A-Za-z0-9]{16,}")


class CredentialsError(VenueStartupError):
    """No usable API key / secret (the message names where they were looked for, never them)."""


@dataclass(frozen=True, slots=True)
class Credentials:
    api_key: str = field(repr=False)
    secret: str = field(repr=False)
    source: str = ""

    @property
    def account(self) -> str:
        return account_id("binance-usdm", self.api_key)

    def __repr__(self) -> str:
        return f"Credentials(source={self.source!r}, account={self.account!r})"


def load_credentials(cfg: BinanceVenueConfig, resolve: Callable[[str], Path],
                     environ: Mapping[str, str] = os.environ) -> Credentials:
    """The environment first (both variables set), else the TOML ``secrets_file`` with
    ``api_key`` and ``api_secret``. Blocking (reads a file): call off the loop."""
    key = environ.get(cfg.api_key_env, "").strip()
    secret = environ.get(cfg.api_secret_env, "").strip()
    if key and secret:
        return Credentials(key, secret, f"env:{cfg.api_key_env}")
    if cfg.secrets_file:
        path = resolve(cfg.secrets_file)
        try:
            doc = tomllib.loads(path.read_text())
        except OSError as exc:
            raise CredentialsError(f"execution.binance.secrets_file {path}: cannot read "
                                   f"({exc.strerror or type(exc).__name__})") from None
        except UnicodeDecodeError:
            raise CredentialsError(f"execution.binance.secrets_file {path}: not UTF-8 text"
                                   ) from None
        except tomllib.TOMLDecodeError:
            raise CredentialsError(f"execution.binance.secrets_file {path}: not valid TOML "
                                   "(expected api_key = \"...\" and api_secret = \"...\")"
                                   ) from None
        key, secret = str(doc.get("api_key", "")).strip(), str(doc.get("api_secret", "")).strip()
        if key and secret:
            return Credentials(key, secret, f"file:{path}")
        raise CredentialsError(f"execution.binance.secrets_file {path}: needs both api_key "
                               "and api_secret")
    raise CredentialsError(f"no Binance credentials: set {cfg.api_key_env} and "
                           f"{cfg.api_secret_env}, or name execution.binance.secrets_file")


class Redactor:
    """Removes the API key, the secret and every listenKey seen (the last 16) from text."""

    def __init__(self, credentials: Credentials) -> None:
        self._creds = credentials
        self._listen_keys: collections.deque[str] = collections.deque(maxlen=16)

    def remember(self, listen_key: str) -> None:
        self._listen_keys.append(listen_key)

    def __call__(self, text: str) -> str:
        for secret in (*self._listen_keys, self._creds.api_key, self._creds.secret):
            if secret:
                text = text.replace(secret, "<redacted>")
        return _LISTEN_KEY_RE.sub(r"\1<redacted>", text)
