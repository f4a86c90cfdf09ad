"""The progress bar: exact lines, quiet off a terminal, rate-limited redraws, stderr only."""

from __future__ import annotations

import io
import sys
import time

import pytest

from dolphind.report.progress import ProgressBar, format_line


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_format_line_with_a_total() -> None:
    line = format_line(12_345, 27_360, 0.25, columns=100)
    assert line.endswith(" 45.1%  12,345/27,360 bars  49.4k bars/s  ETA 0:00:00")
    assert len(line) == 100 and line.startswith("[####")
    assert format_line(500, 1000, 10.0, columns=80).endswith(
        " 50.0%    500/1,000 bars     50 bars/s  ETA 0:00:10")
    assert format_line(1000, 1000, 10.0).endswith(
        "100.0%  1,000/1,000 bars    100 bars/s  ETA 0:00:00")
    assert format_line(0, 1000, 0.0).endswith("ETA --:--:--")
    # Too narrow for a bar: the figures alone, cut to fit.
    assert format_line(5, 10, 1.0, columns=30) == " 50.0%   5/10 bars      5 bars"


def test_format_line_without_a_total_and_big_rates() -> None:
    assert format_line(2_500_000, None, 1.0) == "2,500,000 bars  2.50M bars/s  0:00:01 elapsed"
    assert format_line(10, 0, 3600.0, unit="symbol-bars") == \
        "10 symbol-bars  0 symbol-bars/s  1:00:00 elapsed"
    assert "123k bars/s" in format_line(123_456, None, 1.0)


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
    bar = ProgressBar(10, enabled=True, columns=60)
    bar.update(5)
    bar.close()
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.startswith("\r[") and out.err.endswith("bars/s  ETA 0:00:00\n")


def test_redraws_are_rate_limited_on_a_terminal() -> None:
    stream, clock = FakeTty(), FakeClock()
    bar = ProgressBar(1000, stream=stream, clock=clock, min_interval_s=0.5, columns=70)
    assert bar.enabled
    for i in range(1000):  # a thousand bars in 1 s of (fake) time
        clock.t += 0.001
        bar.update(i + 1)
    bar.close()
    bar.close()  # once only
    frames = stream.getvalue().split("\r")[1:]
    assert len(frames) == 3  # the first update, one at t=0.5 s, and close
    assert frames[-1].rstrip("\n").endswith("1,000/1,000 bars   1000 bars/s  ETA 0:00:00")
    assert len({len(f.rstrip("\n")) for f in frames}) == 1  # the bar does not jitter
    assert stream.getvalue().endswith("\n") and stream.getvalue().count("\n") == 1
    assert all(len(f.rstrip("\n")) <= 70 for f in frames)


def test_a_shorter_line_overwrites_the_longer_one() -> None:
    stream, clock = FakeTty(), FakeClock()
    bar = ProgressBar(None, stream=stream, clock=clock, min_interval_s=0.0)
    clock.t += 1.0
    bar.update(1_000_000)
    clock.t += 1000.0
    bar.update(1_000_001)
    first, second = stream.getvalue().split("\r")[1:]
    assert len(second) >= len(first)


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
