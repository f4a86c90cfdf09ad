"""What runs in the background, and how a crash of it is seen: stages and watched tasks.

A stage (``Stage``, run by dolphind/supervisor.py) is an object with a ``name`` and
``async def run()``. ``run`` returning means the stage finished its work (its input closed);
raising means it crashed, and the supervisor counts it and restarts it with a backoff or, on a
crash loop, ends the daemon. Cancellation is the daemon's way to stop it.

Three kinds of stage run under supervision:

- the pipeline's stages (feed -> market -> scan -> alpha -> execution): a source stage
  (``is_source = True``) is cancelled at shutdown, every other stage ends once its input is
  closed and drained, then its ``output`` channel (if it has one) is closed for the next;
- the background loops a component offers through ``stages()`` (``StageOwner``: the Binance
  venue's user stream, REST polling...). They never end by themselves; the daemon cancels them
  after the pipeline has drained, because the draining stages still need them;
- the state bus's loops (connector, writer, recovery): offered through ``stages()`` too, run
  by the daemon from before the pipeline opens until after it has closed.

A few loops must stay owned by their component, because their life is the component's, not
the pipeline's: the store's checkpointer and the audit log's writer (from the file's opening
to its closing, after the drain), the fenced lease's lock owner (the cluster's lock belongs to
the one task that took it), the Command Center's poller (only while a page is open). Such a
task is started with ``start_watched``: when it ends with an exception, the crash is logged
with its traceback, counted, and handed to the owner, who says what it means (the audit log
fails loudly, the lease refuses to go on, the poller starts again with the next page). No
task is fire-and-forget.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Coroutine, Protocol, Sequence, runtime_checkable

import structlog
from prometheus_client import Counter

log = structlog.get_logger("dolphind.stage")


class Output(Protocol):
    """What a stage's output channel is to the daemon: something it closes once the stage is
    done, so the next stage drains it and ends (``dolphind.channels.Channel``)."""

    def close(self) -> None: ...


@runtime_checkable
class Stage(Protocol):
    name: str

    @property
    def is_source(self) -> bool:
        """True for a stage that never ends by itself (the feeds, the external factors'
        producer): the daemon cancels it first at shutdown, and every stage behind it then
        drains its input and ends. False for the rest (and for background loops, which the
        daemon cancels after the drain)."""

    @property
    def output(self) -> Output | None:
        """The channel this stage writes to, closed by the daemon once the stage is done
        (drained, cancelled or given up on) so that the next stage drains it and ends; None
        for a stage nobody reads from (execution, a background loop)."""

    async def run(self) -> None: ...


@runtime_checkable
class StageOwner(Protocol):
    """A component with background loops of its own, run by the daemon, not by the component."""

    def stages(self) -> Sequence[Stage]: ...


def offered_stages(*components: object) -> list[Stage]:
    """The background stages the given components offer (those that are ``StageOwner``s)."""
    found: list[Stage] = []
    for component in components:
        if isinstance(component, StageOwner):
            found.extend(component.stages())
    return found


def start_watched(coro: Coroutine[Any, Any, None], name: str, *,
                  crashes: Counter | None = None,
                  on_crash: Callable[[BaseException], None] | None = None) -> asyncio.Task[None]:
    """Run ``coro`` as a task its component owns (and cancels and awaits when it closes).

    If the task ends with an exception (a crash, not a cancellation) the crash is logged
    (``task.crashed``, with the traceback), counted in ``crashes{task=name}`` and handed to
    ``on_crash`` at once, on the loop: nothing waits for the owner to await the task."""
    if crashes is not None:
        crashes.labels(name)  # exported at 0 from the start: an alert's increase() sees 1

    def seen(task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()  # retrieved here: never "exception was never retrieved"
        if exc is None:
            return
        log.error("task.crashed", task=name, error=f"{type(exc).__name__}: {exc}",
                  exc_info=exc)
        if crashes is not None:
            crashes.labels(name).inc()
        if on_crash is not None:
            on_crash(exc)

    task = asyncio.get_running_loop().create_task(coro, name=name)
    task.add_done_callback(seen)
    return task
