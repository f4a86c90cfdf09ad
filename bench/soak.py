"""Soak: the real daemon replaying the bundled sample in a loop, as fast as it goes, for minutes.

Memory must stay flat and throughput steady: nothing may grow with the number of loops (issue
17: the Arrow sink rewrote the whole day file at every day change of a looping replay; RSS went
272 -> 661 MB and bars/s fell 77% in 11 minutes).

The daemon runs as a subprocess (``dolphind run``) in a temporary folder: paper venue, replay
of data/sample with ``loop = true`` and ``speed = 0``. Every ``--every`` seconds the script
reads the daemon's RSS (/proc/<pid>/status) and ``dolphind_bars_total`` (/metrics). Warm-up
(the first ``--warmup`` seconds: kernel compile, first loop, allocator growth) is excluded; the
figures compare the first and last minute after it, in the same run.

Usage: .venv/bin/python bench/soak.py [--minutes 10] [--every 10] [--warmup 120]
Last line: RESULT rss_growth_pct=... bars_per_s_first=... bars_per_s_last=... throughput_ratio=...
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def bars_total(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("dolphind_bars_total "):
                return float(line.split()[1])
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=120.0, help="seconds excluded at the start")
    args = ap.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="dolphind-soak-") as tmp:
        cfg = Path(tmp) / "dolphind.toml"
        cfg.write_text(f'mode = "paper"\nshutdown_timeout_s = 10.0\n[ops]\n'
                       f'listen = "127.0.0.1:{port}"\n[data]\ndir = "var"\n[replay]\n'
                       f'paths = ["{ROOT / "data" / "sample"}"]\nspeed = 0.0\nloop = true\n'
                       '[logging]\nformat = "json"\nlevel = "warning"\n')
        log = (Path(tmp) / "daemon.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "dolphind.cli", "run", "--config", str(cfg)],
                                stdout=log, stderr=subprocess.STDOUT, cwd=tmp,
                                env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
        samples: list[tuple[float, float, float]] = []  # (elapsed s, rss MB, bars)
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < args.minutes * 60:
                time.sleep(args.every)
                if proc.poll() is not None:
                    raise SystemExit(f"daemon exited {proc.returncode}: "
                                     f"{(Path(tmp) / 'daemon.log').read_text()[-2000:]}")
                try:
                    bars = bars_total(port)
                except OSError:
                    continue  # not listening yet
                samples.append((time.monotonic() - t0, rss_mb(proc.pid), bars))
                s = samples[-1]
                print(f"t={s[0]:6.0f}s rss={s[1]:7.1f} MB bars={s[2]:10.0f}", flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            log.close()
    after = [s for s in samples if s[0] >= args.warmup]
    if len(after) < 4:
        raise SystemExit("too few samples after warm-up: run longer or lower --warmup")
    window = max(2, int(60 / args.every) + 1)  # about a minute of samples at each end

    def rate(part: list[tuple[float, float, float]]) -> float:
        return (part[-1][2] - part[0][2]) / (part[-1][0] - part[0][0])

    first, last = after[:window], after[-window:]
    rss_first, rss_last = first[0][1], max(s[1] for s in last)
    growth = 100.0 * (rss_last - rss_first) / rss_first
    r_first, r_last = rate(first), rate(last)
    print(f"after warm-up ({args.warmup:.0f} s): RSS {rss_first:.1f} -> {rss_last:.1f} MB "
          f"({growth:+.1f}%), peak {max(s[1] for s in after):.1f} MB; bars/s first minute "
          f"{r_first:.0f}, last minute {r_last:.0f}; {samples[-1][2]:.0f} bars in "
          f"{samples[-1][0]:.0f} s; load average {os.getloadavg()[0]:.2f} (a shared machine)")
    print(f"RESULT rss_growth_pct={growth:.2f} bars_per_s_first={r_first:.1f} "
          f"bars_per_s_last={r_last:.1f} throughput_ratio={r_last / r_first:.3f}")


if __name__ == "__main__":
    main()
