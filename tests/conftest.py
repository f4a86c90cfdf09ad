"""Fixtures shared by every test: a loop-blocking detector, polling instead of sleeps."""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable, Iterator, TypeVar

import pytest
import structlog
from blockbuster import BlockBuster, blockbuster_ctx

T = TypeVar("T")

# Tests that never call logs.configure log through structlog's default console renderer. With
# rich installed (Textual, for `dolphind top`, brings it) that renderer formats tracebacks with
# rich, which reads source files: a blocking call on the loop that blockbuster would blame on
# the code that logged. Plain tracebacks, as the daemon's own console format writes them.
structlog.configure(processors=[
    *structlog.get_config()["processors"][:-1],
    structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)])


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    """Fail any test in which dolphind blocks the event loop (file I/O, time.sleep, ...).

    Only dolphind's own modules are scanned: the test code itself may block on purpose
    (e.g. reading a file to build a fixture) without hiding a blocking call in the daemon.
    """
    with blockbuster_ctx(["dolphind"]) as bb:
        yield bb


async def eventually(check: Callable[[], T | Awaitable[T]], timeout: float = 10.0,
                     interval: float = 0.02, what: str = "condition") -> T:
    """Poll ``check`` until it returns a truthy value (or raises nothing falsy) in time."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = check()
            if asyncio.iscoroutine(value) or isinstance(value, Awaitable):
                value = await value  # type: ignore[misc]
            if value:
                return value  # type: ignore[return-value]
        except AssertionError as exc:
            last_exc = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}") from last_exc
        await asyncio.sleep(interval)


def _release(exc: BaseException | None) -> None:
    """urllib's HTTPError (an OSError) holds its open response: close it before dropping it,
    or its socket is left to the garbage collector (a ResourceWarning in some later test)."""
    close = getattr(exc, "close", None)
    if callable(close):
        close()


def wait_until(check: Callable[[], T], timeout: float = 10.0, interval: float = 0.05,
               what: str = "condition") -> T:
    """Synchronous ``eventually`` for tests that drive subprocesses."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = check()
            if value:
                _release(last_exc)
                return value
        except (AssertionError, OSError) as exc:
            _release(last_exc)
            last_exc = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}") from last_exc
        time.sleep(interval)


class FakePerf:
    """A perf counter that advances ``step_s`` per read: a hook 'takes' step_s, no sleeping."""

    def __init__(self, step_s: float) -> None:
        self.t, self.step_s = 0.0, step_s

    def __call__(self) -> float:
        self.t += self.step_s
        return self.t
