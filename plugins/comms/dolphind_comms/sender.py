"""Delivery: a bounded queue and one sender task that posts, retries with backoff, gives up.

The hooks only put a message in the queue (never await the network), so a dead webhook costs
the daemon nothing but this task's time. Incidents go before trade messages. When the queue is
full the oldest trade message goes (then the oldest incident): the newest says most about the
present. Nothing here logs the URL or the secret; errors
are logged by type and status only (aiohttp's own messages can contain the URL).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import random
import time
from dataclasses import dataclass
from typing import Any, Callable

import aiohttp
import orjson

from dolphind.plugins import backoff_delay
from dolphind_comms.payloads import Message, payload, retryable
from dolphind_comms.settings import CommsSettings

SIGNATURE_HEADER = "X-Dolphind-Signature"


@dataclass(frozen=True, slots=True)
class Secrets:
    url: str
    chat_id: str = ""
    signing_key: str = ""

    def __repr__(self) -> str:  # never print the values, even by accident
        return "Secrets(<hidden>)"


class WebhookSender:
    def __init__(self, settings: Callable[[], CommsSettings], secrets: Secrets, metrics: Any,
                 log: Any, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._secrets = secrets
        self._m = metrics
        self._log = log
        self._rng = rng  # None: the module's generator
        self._queue: collections.deque[Message] = collections.deque()
        # Incidents jump the queue: a halt must not wait behind a burst of trade messages.
        self._urgent: collections.deque[Message] = collections.deque()
        self._clock = clock
        self._sent_at: collections.deque[float] = collections.deque()  # the last minute's
        self._wake = asyncio.Event()
        self._closing = False
        self.sent = self.gave_up = self.dropped = self.rejected = self.rate_limited = 0

    def offer(self, message: Message | str) -> None:
        """Queue a message; never waits. Full: the oldest message is dropped and counted."""
        if self._closing:
            return
        m = message if isinstance(message, Message) else Message(message)
        while len(self) >= self._settings().queue_size:
            # Trade chatter goes first; an incident is dropped only for a newer incident.
            (self._queue or self._urgent).popleft()
            self.dropped += 1
            self._m.messages.labels("dropped").inc()
        (self._urgent if m.event == "incident" else self._queue).append(m)
        self._m.queue_depth.set(len(self))
        self._wake.set()

    def __len__(self) -> int:
        return len(self._queue) + len(self._urgent)

    async def run(self) -> None:
        """The sender task: until closed and drained."""
        async with aiohttp.ClientSession() as session:
            while True:
                if not len(self):
                    if self._closing:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await self._rate_limit()
                message = (self._urgent or self._queue).popleft()
                self._m.queue_depth.set(len(self))
                await self.deliver(session, message)

    async def _rate_limit(self) -> None:
        """Wait until fewer than ``max_per_minute`` messages went out in the last 60 s (a
        sliding window: a burst never exceeds the service's per-minute allowance)."""
        while True:
            limit = self._settings().max_per_minute
            now = self._clock()
            while self._sent_at and now - self._sent_at[0] >= 60.0:
                self._sent_at.popleft()
            if len(self._sent_at) < limit:
                self._sent_at.append(now)
                return
            self.rate_limited += 1
            # Re-checked at least every second (the window is read from the clock each time).
            await asyncio.sleep(min(1.0, max(0.01, 60.0 - (now - self._sent_at[0]))))

    def close(self) -> None:
        """No more messages; ``run`` ends once the queue is drained."""
        self._closing = True
        self._wake.set()

    async def deliver(self, session: aiohttp.ClientSession, message: Message | str) -> str:
        """Post ``message``; retry what may succeed later. Returns the outcome."""
        s = self._settings()
        m = message if isinstance(message, Message) else Message(message)
        body = orjson.dumps(payload(s.format, m.text, self._secrets.chat_id, m.event, m.data))
        headers = {"Content-Type": "application/json"}
        if self._secrets.signing_key:
            digest = hmac.new(self._secrets.signing_key.encode(), body, hashlib.sha256)
            headers[SIGNATURE_HEADER] = f"sha256={digest.hexdigest()}"
        last_error = ""
        for attempt in range(1, s.max_attempts + 1):
            retry_after: float | None = None
            try:
                async with session.post(self._secrets.url, data=body, headers=headers,
                                        timeout=aiohttp.ClientTimeout(total=s.timeout_s)) as resp:
                    status = resp.status
                    await resp.read()
                    if 200 <= status < 300:
                        self._m.attempts.labels("ok").inc()
                        self._m.messages.labels("sent").inc()
                        self.sent += 1
                        self._log.info("comms.sent", attempts=attempt)
                        return "sent"
                    self._m.attempts.labels("http_error").inc()
                    last_error = f"HTTP {status}"
                    if not retryable(status):
                        self._m.messages.labels("rejected").inc()
                        self.rejected += 1
                        self._log.error("comms.rejected", status=status, attempts=attempt)
                        return "rejected"
                    retry_after = _retry_after(resp.headers.get("Retry-After"))
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self._m.attempts.labels("network_error").inc()
                last_error = type(exc).__name__  # not str(exc): it may carry the URL
            if attempt == s.max_attempts:
                break
            # The daemon's one back-off: attempt 1 waits ~initial, doubling up to max, drawn
            # in [d/2, d] so that many daemons do not retry in step.
            delay = backoff_delay(attempt - 1, s.backoff_initial_s, s.backoff_max_s, self._rng)
            if retry_after is not None:
                delay = min(max(delay, retry_after), s.backoff_max_s)
            self._log.warning("comms.retry", attempt=attempt, error=last_error,
                              delay_s=round(delay, 3))
            await asyncio.sleep(delay)
        self._m.messages.labels("gave_up").inc()
        self.gave_up += 1
        self._log.error("comms.gave_up", attempts=s.max_attempts, last_error=last_error)
        return "gave_up"


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (the seconds form; an HTTP date is ignored)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
