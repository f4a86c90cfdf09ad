"""cpu_affinity: checked against the CPUs this process may use; pinning reaches every thread,
and threads started afterwards inherit it."""

from __future__ import annotations

import os
import threading

import pytest

from dolphind.affinity import available_cpus, pin_process
from dolphind.config import ConfigError, config_from_dict


def test_a_cpu_this_process_cannot_use_is_a_config_error() -> None:
    bad = max(available_cpus()) + 1000
    with pytest.raises(ConfigError) as err:
        config_from_dict({"cpu_affinity": [bad]})
    assert err.value.problems == [
        f"cpu_affinity: CPU {bad} not available to this process (available: "
        f"{', '.join(map(str, sorted(available_cpus())))})"]
    with pytest.raises(ConfigError, match=r"cpu_affinity\[0\]: expected an integer"):
        config_from_dict({"cpu_affinity": ["0"]})
    assert config_from_dict({"cpu_affinity": [min(available_cpus())]}).cpu_affinity \
        == (min(available_cpus()),)


def test_pinning_reaches_running_threads_and_the_ones_started_later() -> None:
    before = available_cpus()
    one = {max(before)}
    stop = threading.Event()
    running = threading.Thread(target=stop.wait)
    running.start()
    seen: list[set[int]] = []
    try:
        pin_process(one)
        later = threading.Thread(target=lambda: seen.append(os.sched_getaffinity(0)))
        later.start()
        later.join()
        assert os.sched_getaffinity(running.native_id) == one
        assert os.sched_getaffinity(0) == one
        assert seen == [one]
    finally:
        stop.set()
        running.join()
        pin_process(before)
    assert os.sched_getaffinity(0) == before
