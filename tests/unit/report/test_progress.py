"""The progress display (tqdm): quiet off a terminal, stderr only, ends on 100 %.

Rewritten with issue 21, which replaced the hand-written bar by tqdm (the old tests checked
that bar's own line format and redraw limiter, which tqdm now owns)."""

from __future__ import annotations

import io
import sys
import time

import pytest

from dolphind.report.progress import ProgressBar


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_quiet_when_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    stream = io.StringIO()  # a pipe or a log file: isatty() is False
    with ProgressBar(100, stream=stream) as bar:
        assert not bar.enabled
        for i in range(100):
            bar.update(i + 1)
    assert stream.getvalue() == ""
    assert bar.done == 100
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_defaults_to_stderr_and_never_writes_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    bar = ProgressBar(10, enabled=True)
    bar.update(5)
    bar.close()
    out = capsys.readouterr()
    assert out.out == ""
    assert "50%" in out.err and "100%" not in out.err  # the state it was left in


def test_a_whole_run_ends_on_100_percent() -> None:
    stream = FakeTty()
    bar = ProgressBar(27_360, stream=stream, min_interval_s=10.0)  # few redraws
    assert bar.enabled
    for i in range(0, 27_361, 7):
        bar.update(min(i, 27_360))
    bar.update(27_360)
    bar.close()
    bar.close()  # once only
    final = stream.getvalue().rstrip("\n").split("\r")[-1]
    assert "100%" in final and "27.4k/27.4k" in final, final
    assert stream.getvalue().endswith("\n")


def test_without_a_total_it_counts_and_gives_a_rate() -> None:
    stream = FakeTty()
    with ProgressBar(None, stream=stream) as bar:
        bar.update(2_500_000)
    text = stream.getvalue()
    assert "2.50M" in text and "bars/s" in text


def test_disabled_update_is_cheap() -> None:
    bar = ProgressBar(10**6, stream=io.StringIO())
    start = time.perf_counter()
    for i in range(200_000):
        bar.update(i)
    per_call = (time.perf_counter() - start) / 200_000
    assert per_call < 5e-6, per_call  # generous: ~0.1 us on this machine


def test_closed_or_odd_streams_count_as_not_a_terminal() -> None:
    closed = io.StringIO()
    closed.close()
    assert not ProgressBar(1, stream=closed).enabled
    assert not ProgressBar(1, stream=object()).enabled  # type: ignore[arg-type]
    assert sys.stderr is not None
