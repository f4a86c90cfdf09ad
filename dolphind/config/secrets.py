"""Secrets the config points at but never holds: the control token (environment or file).

The Binance API keys are read by the venue (``dolphind.venues.binance``), which owns them.
"""

from __future__ import annotations

import os
from typing import Mapping

from dolphind.config.schema import Config, ConfigError


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
