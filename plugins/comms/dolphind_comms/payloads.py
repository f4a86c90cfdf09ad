"""Message text and the JSON body each chat service expects; the retry delays. All pure."""

from __future__ import annotations

from typing import Any

_ICON = {"info": "ℹ️", "warning": "⚠️", "critical": "🚨"}
_DISCORD_MAX = 2000  # Discord refuses longer content
_TELEGRAM_MAX = 4096


def message_text(title: str, incident: Any) -> str:
    """One line for a control-plane incident record (``ControlAction`` with action 'incident')."""
    d = incident.detail
    sev = d.get("severity", "warning")
    return (f"{_ICON.get(sev, '')} [{title}] {sev.upper()} {d.get('kind', 'incident')} "
            f"({incident.cause}): {d.get('message', '')}").strip()


def payload(fmt: str, text: str, chat_id: str = "") -> dict[str, Any]:
    if fmt == "slack":
        return {"text": text}
    if fmt == "discord":
        return {"content": text[:_DISCORD_MAX]}
    if fmt == "telegram":
        return {"chat_id": chat_id, "text": text[:_TELEGRAM_MAX],
                "disable_web_page_preview": True}
    raise ValueError(f"unknown format {fmt!r}")


def backoff_delay(attempt: int, initial_s: float, max_s: float, jitter: float = 0.0,
                  unit_random: float = 0.5) -> float:
    """Delay before retry number ``attempt`` (1 = the first retry): initial * 2^(attempt-1),
    capped, spread by +-jitter (``unit_random`` in [0, 1) is the random draw)."""
    base = min(max_s, initial_s * 2.0 ** (attempt - 1))
    return max(0.0, base * (1.0 + jitter * (2.0 * unit_random - 1.0)))


def retryable(status: int) -> bool:
    """5xx and 429 may succeed later; any other 4xx will not (bad URL, bad body, no rights)."""
    return status >= 500 or status == 429
