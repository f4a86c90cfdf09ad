"""The numba kernels compiled (or loaded from numba's cache) while the rest of the pipeline opens.

``kernels_warm`` is an async context manager that owns the compile: the work starts on enter and
is awaited on exit, also when opening the pipeline fails half-way (then it is cancelled first),
so it never outlives its owner (DESIGN: no fire-and-forget tasks).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, AsyncIterator

import structlog

from dolphind.alpha.warmup import warmup as warmup_alpha
from dolphind.scan.scanner import warmup as warmup_scan

log = structlog.get_logger("dolphind.app")

# Loading from the cache takes about a second (more on a busy machine): only a start that takes
# longer is compiling, and the console says so.
_COMPILING_AFTER_S = 4.0


def _warm_kernels(params: Any) -> None:
    """Compile (or load from cache) every numba kernel: runs in a worker thread."""
    warmup_scan(readonly_only=True)  # the daemon's closes are always read-only arrays
    warmup_alpha(params)


async def compile_kernels(params: Any) -> None:
    """The kernels in a worker thread while the books and the history load; a first start
    (nothing in numba's cache yet) takes tens of seconds, and the console says so."""
    t0 = time.monotonic()
    task = asyncio.ensure_future(asyncio.to_thread(_warm_kernels, params))
    try:
        done, _ = await asyncio.wait({task}, timeout=_COMPILING_AFTER_S)
        if not done:
            import numba

            log.info("scan.kernels_compiling",
                     note="first start (or a new version): numba compiles the scan and alpha "
                          "kernels once (tens of seconds, minutes on a busy machine); later "
                          "starts load them from its cache in about 2 s",
                     cache_dir=getattr(numba.config, "CACHE_DIR", "") or "__pycache__ next to the package")
        await task
    finally:
        task.cancel()  # cancelled while waiting: the thread finishes on its own, unawaited
    log.info("scan.kernels_ready", seconds=round(time.monotonic() - t0, 2))


@contextlib.asynccontextmanager
async def kernels_warm(params: Any) -> AsyncIterator[None]:
    """Compile the kernels while the ``async with`` body runs; on a clean exit wait for them
    (numba kernels compiled before any bar reaches them). A body that fails cancels the compile
    and waits for it to end before the failure goes on: the task never outlives its owner."""
    task = asyncio.create_task(compile_kernels(params), name="warmup")
    try:
        yield
    except BaseException:
        task.cancel()
        await asyncio.wait({task})
        if not task.cancelled() and task.exception() is not None:
            log.warning("scan.kernels_failed", error=repr(task.exception()))
        raise
    await task
