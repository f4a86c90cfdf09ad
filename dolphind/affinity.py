"""CPU affinity of the whole process (``cpu_affinity`` in the config).

The event loop hands every order to the store thread and waits for it twice (the order before
it is sent, the fill before it is shown). On a VM, waking a thread on another vCPU costs more
than the commit itself, and whether the two threads share a CPU is the scheduler's choice from
run to run (bench/execution.py measures both ways). Pinning is the operator's call, a
deployment setting like systemd's CPUAffinity=, so it is off unless configured.
"""

from __future__ import annotations

import os
from typing import Iterable


def available_cpus() -> set[int]:
    return set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set()


def affinity_problems(cpus: Iterable[int]) -> list[str]:
    """What is wrong with pinning to ``cpus`` on this machine (nothing for an empty list)."""
    wanted = list(cpus)
    if not wanted:
        return []
    if not hasattr(os, "sched_setaffinity"):
        return ["cpu_affinity: this platform cannot pin a process to CPUs; leave it empty"]
    have = available_cpus()
    missing = sorted(c for c in wanted if c not in have)
    if missing:
        return [f"cpu_affinity: CPU {', '.join(map(str, missing))} not available to this process "
                f"(available: {', '.join(map(str, sorted(have)))})"]
    return []


def pin_process(cpus: Iterable[int]) -> None:
    """Pin every thread of this process to ``cpus``; threads started later inherit it."""
    wanted = set(cpus)
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), wanted)
        except ProcessLookupError:
            pass  # the thread ended meanwhile
