"""A/B the benchmarks of two git revisions on this machine, in the same run.

    .venv/bin/python bench/compare.py --base e15b45c [--head REV] [--rounds 3] [--full] [bench ...]

The base (and the head, when ``--head`` is given) is checked out into a temporary detached
``git worktree``; without ``--head`` the head is this checkout as it is (uncommitted changes
included). For each bench the two revisions' own copies of ``bench/<name>.py`` run alternately,
base then head, ``--rounds`` times; every run is a fresh process with cwd and ``PYTHONPATH`` set
to its revision's tree (checked first: ``dolphind.__file__`` must resolve inside that tree, an
editable install must not shadow it) and BLAS on one thread; each tree first runs ``PRIME``
once, untimed, so the first round does not pay numba's compile. The ``RESULT`` lines are parsed;
per metric it prints the median of each side, its spread (min..max) and head/base. ``!`` marks
a metric whose head median is more than 10% worse than the base median and outside the base
spread (lower is better, except the names in ``HIGHER_IS_BETTER``): rerun that bench alone with
more rounds before calling it a regression. A bench missing at one revision is skipped.

Without bench names it runs ``DEFAULT`` with the short arguments of ``BENCHES`` (about 20-25
minutes with 3 rounds on 2 cores); ``--full`` runs each bench with its own defaults.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name: the arguments used by default, kept short enough for 3 rounds of DEFAULT in ~20 minutes
BENCHES: dict[str, list[str]] = {
    "backtest": [],  # both sets, ~12 s (--quick: the 5m set only)
    "execution": [],  # ~27 s
    "alpha": [],  # ~5 s
    "ingest": ["--frames", "150000"],  # ~11 s
    "store": [],  # ~2 s
    "eigenscan": [],  # ~50 s, no option to shorten it
    "audit_anchor": [],  # ~1 s
    "statebus": ["--scans", "1000"],  # ~25 s, needs Java (and fetches the member jar)
    "kernel_compile": [],  # long, not in DEFAULT
    "soak": ["--minutes", "3", "--warmup", "60"],  # long, not in DEFAULT
}
DEFAULT = ["backtest", "execution", "alpha", "ingest", "store", "eigenscan", "audit_anchor",
           "statebus"]
# run once per tree, untimed, before the rounds: numba compiles the kernels into that tree's
# cache (a fresh worktree has none) instead of into the first round's figures
PRIME = ["backtest", "--quick"]
HIGHER_IS_BETTER = ("per_s", "speedup", "baseline_ratio", "throughput_ratio")
THRESHOLD = 0.10


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def child_env(tree: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    return env


def check_import(tree: Path) -> str:
    """The dolphind a bench in `tree` imports (-P: no cwd on sys.path, as for a script)."""
    out = subprocess.run([sys.executable, "-P", "-c", "import dolphind; print(dolphind.__file__)"],
                         cwd=tree, env=child_env(tree), check=True, capture_output=True,
                         text=True).stdout.strip()
    if not Path(out).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"{tree}: imports {out}, not its own dolphind (editable install?)")
    return out


def run_bench(tree: Path, name: str, args: list[str]) -> tuple[dict[str, float], float, str]:
    """(RESULT figures, wall seconds, error text or "")."""
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, f"bench/{name}.py", *args], cwd=tree,
                       env=child_env(tree), capture_output=True, text=True)
    secs = time.monotonic() - t0
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        tail = "\n".join((p.stdout + p.stderr).strip().splitlines()[-5:])
        return {}, secs, f"exit {p.returncode}: {tail}"
    figures = {}
    for k, v in re.findall(r"(\w+)=(\S+)", lines[-1]):
        try:
            figures[k] = float(v)
        except ValueError:
            pass
    return figures, secs, ""


def fmt(x: float) -> str:
    return f"{x:.4g}"


def report(name: str, base: list[dict[str, float]], head: list[dict[str, float]]) -> None:
    print(f"\n{name}  ({len(base)} base / {len(head)} head runs)")
    print(f"  {'metric':26s} {'base median':>11s} {'[min..max]':>21s} {'head median':>11s} "
          f"{'[min..max]':>21s} {'head/base':>9s}")
    for key in base[0]:
        b = [r[key] for r in base if key in r]
        h = [r[key] for r in head if key in r]
        if not h:
            continue
        mb, mh = statistics.median(b), statistics.median(h)
        ratio = mh / mb if mb else float("nan")
        higher = any(s in key for s in HIGHER_IS_BETTER)
        worse = ratio < 1 - THRESHOLD if higher else ratio > 1 + THRESHOLD
        outside = mh < min(b) if higher else mh > max(b)
        flag = " !" if worse and outside else ""
        print(f"  {key:26s} {fmt(mb):>11s} {'[' + fmt(min(b)) + '..' + fmt(max(b)) + ']':>21s} "
              f"{fmt(mh):>11s} {'[' + fmt(min(h)) + '..' + fmt(max(h)) + ']':>21s} "
              f"{ratio:9.3f}{flag}  ({'higher' if higher else 'lower'} is better)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", required=True, help="git revision of the baseline")
    ap.add_argument("--head", help="git revision to compare (default: this checkout as it is)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--full", action="store_true", help="each bench's own default arguments")
    ap.add_argument("benches", nargs="*", help=f"default: {' '.join(DEFAULT)}")
    args = ap.parse_args()
    names = args.benches or DEFAULT
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        raise SystemExit(f"unknown bench {unknown}; known: {' '.join(BENCHES)}")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still remove the worktrees
    tmp = Path(tempfile.mkdtemp(prefix="dolphind-compare-"))
    trees: dict[str, Path] = {}
    try:
        for side, rev in (("base", args.base), ("head", args.head)):
            if rev is None:
                trees[side] = ROOT
                continue
            trees[side] = tmp / side
            git("worktree", "add", "--detach", str(trees[side]), rev)
        for side, tree in trees.items():
            rev = git("rev-parse", "--short", "HEAD", cwd=tree)
            dirty = " (+ uncommitted changes)" if git("status", "--porcelain", cwd=tree) else ""
            print(f"{side}: {rev}{dirty} {tree} -> imports {check_import(tree)}")
        for side, tree in trees.items():
            if (tree / "bench" / f"{PRIME[0]}.py").exists():
                _, secs, err = run_bench(tree, PRIME[0], PRIME[1:])
                print(f"{side}: primed with {' '.join(PRIME)} in {secs:.0f} s {err}".rstrip())
        print(f"python {sys.executable}; OPENBLAS_NUM_THREADS="
              f"{child_env(ROOT)['OPENBLAS_NUM_THREADS']}; rounds {args.rounds}; "
              f"{'full' if args.full else 'short'} arguments", flush=True)

        results: dict[str, tuple[list[dict[str, float]], list[dict[str, float]]]] = {}
        for name in names:
            missing = [s for s, t in trees.items() if not (t / "bench" / f"{name}.py").exists()]
            if missing:
                print(f"\n{name}: skipped, bench/{name}.py does not exist at {' and '.join(missing)}")
                continue
            bench_args = [] if args.full else BENCHES[name]
            print(f"\n{name} {' '.join(bench_args)}", flush=True)
            runs: dict[str, list[dict[str, float]]] = {"base": [], "head": []}
            for r in range(args.rounds):
                for side in ("base", "head"):
                    figures, secs, err = run_bench(trees[side], name, bench_args)
                    line = err or " ".join(f"{k}={fmt(v)}" for k, v in figures.items())
                    print(f"  round {r + 1} {side} {secs:6.1f} s  {line}", flush=True)
                    if figures:
                        runs[side].append(figures)
                if not (runs["base"] and runs["head"]):
                    break  # a side that fails its first round fails every round
            if runs["base"] and runs["head"]:
                results[name] = (runs["base"], runs["head"])
            else:
                print(f"{name}: no comparison (a side produced no RESULT)")

        print(f"\n=== head/base (!: worse by more than {THRESHOLD:.0%} and outside the base spread)")
        for name, (base, head) in results.items():
            report(name, base, head)
    finally:
        for tree in trees.values():
            if tree != ROOT:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT,
                               capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
