"""The Stage protocol: what the supervisor runs (dolphind/supervisor.py).

A stage is an object with a ``name`` and ``async def run()``. ``run`` returning means the stage
finished its work (its input closed); raising means it crashed, and the supervisor restarts it
with a backoff or, on a crash loop, ends the daemon. Cancellation is the daemon's way to stop it.

Two kinds run under the daemon's task group:

- the pipeline's stages (feed -> market -> scan -> alpha -> execution): a source stage
  (``is_source = True``) is cancelled at shutdown, every other stage ends once its input is
  closed and drained, then its ``output`` channel (if it has one) is closed for the next;
- the background loops a component offers through ``stages()`` (``StageOwner``: the Binance
  venue's user stream, REST polling, lease renewal...). They never end by themselves; the daemon
  cancels them after the pipeline has drained, because the draining stages still need them.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable


@runtime_checkable
class Stage(Protocol):
    name: str

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
