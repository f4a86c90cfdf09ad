"""``[plugins.comms]``: where to send, in which shape, how hard to try.

The webhook URL (and the optional signing secret, and Telegram's chat id) are secrets: the
config names the environment variables that hold them, never the values, and nothing logs them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from dolphind.plugins.settings import parse_settings, require

SEVERITIES = ("info", "warning", "critical")
# What can be sent: an entry fill, a closed trade with its PnL, the day's summary, incidents.
EVENTS = ("entry", "exit", "daily", "incident")


@dataclass(frozen=True, slots=True)
class CommsSettings:
    # "webhook": a generic JSON body {"text", "event", "data"} for any HTTP receiver.
    format: Literal["slack", "discord", "telegram", "webhook"] = "slack"
    # Environment variable holding the webhook URL (for Telegram: .../bot<token>/sendMessage).
    url_env: str = "DOLPHIND_COMMS_WEBHOOK_URL"
    # Telegram only: environment variable holding the chat id.
    chat_id_env: str = ""
    # Optional: environment variable holding an HMAC key; the body is then signed into the
    # X-Dolphind-Signature header ("sha256=<hex>") for receivers that verify it.
    secret_env: str = ""
    # Incidents below this severity are not sent.
    min_severity: Literal["info", "warning", "critical"] = "warning"
    # Messages waiting to be sent; when full the oldest is dropped (and counted).
    queue_size: int = 100
    # Tries per message, then it is given up (and counted).
    max_attempts: int = 5
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    # Accepted so older configs still load, but unused: every delay is drawn in
    # [d/2, d] by the daemon's one back-off helper.
    backoff_jitter: float = 0.1
    timeout_s: float = 10.0
    # Shown in every message (which daemon is talking).
    title: str = "dolphind"
    # Which messages are sent (any of "entry", "exit", "daily", "incident").
    events: tuple[str, ...] = EVENTS
    # At most this many messages a minute reach the service (Telegram allows about 20 a
    # minute in a group, Discord 30); more wait in the queue, in order (1..600).
    max_per_minute: int = 20
    # Telegram only: answer /status /profit /daily /halt from the chat_id_env chat (polled with
    # getUpdates; messages from any other chat are ignored).
    commands: bool = False


def load_settings(raw: Mapping[str, Any],
                  environ: Mapping[str, str] = os.environ) -> tuple[CommsSettings, list[str]]:
    s, problems = parse_settings(CommsSettings, raw)
    if problems:
        return s, problems
    require(problems, s.url_env.isidentifier(), "url_env", "must name an environment variable")
    if s.url_env.isidentifier():
        url = environ.get(s.url_env, "")
        require(problems, bool(url), "url_env", f"environment variable {s.url_env} is not set")
        require(problems, not url or url.startswith(("http://", "https://")), "url_env",
                f"environment variable {s.url_env} does not hold an http(s) URL")
    if s.format == "telegram":
        require(problems, s.chat_id_env.isidentifier() and bool(environ.get(s.chat_id_env)),
                "chat_id_env", "telegram needs an environment variable holding the chat id")
    if s.secret_env:
        require(problems, bool(environ.get(s.secret_env)), "secret_env",
                f"environment variable {s.secret_env} is not set")
    require(problems, s.queue_size >= 1, "queue_size", "must be >= 1")
    require(problems, s.max_attempts >= 1, "max_attempts", "must be >= 1")
    require(problems, 0 < s.backoff_initial_s <= s.backoff_max_s, "backoff_initial_s",
            "must be > 0 and <= backoff_max_s")
    require(problems, 0 <= s.backoff_jitter < 1, "backoff_jitter", "must be in [0, 1)")
    require(problems, s.timeout_s > 0, "timeout_s", "must be > 0")
    unknown = [e for e in s.events if e not in EVENTS]
    require(problems, not unknown, "events", f"unknown {unknown}; choose from {list(EVENTS)}")
    require(problems, 1 <= s.max_per_minute <= 600, "max_per_minute", "must be in 1..600")
    require(problems, not s.commands or s.format == "telegram", "commands",
            "only with format = \"telegram\"")
    return s, problems
