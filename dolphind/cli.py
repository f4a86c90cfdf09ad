"""`dolphind run | check-config | status` (more subcommands join as the daemon grows)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def _cmd_run(args: argparse.Namespace) -> int:
    from dolphind.daemon import run

    return run(args.config)


def _cmd_check_config(args: argparse.Namespace) -> int:
    from dolphind.config import ConfigError, load_config
    from dolphind.preflight import preflight, secret_file_warnings

    try:
        cfg = load_config(args.path)
        problems = preflight(cfg)  # what `run` would trip over: files, plugins, token, address
    except ConfigError as exc:
        problems = exc.problems
    if problems:
        for p in problems:
            print(p, file=sys.stderr)
        return 2
    for w in secret_file_warnings(cfg):
        print(f"warning: {w}", file=sys.stderr)
    print(f"{args.path}: ok (config hash {cfg.hash}, mode {cfg.mode})")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    import json
    import urllib.error
    import urllib.request

    from dolphind.config import ConfigError, load_config

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 2
    url = f"http://{cfg.ops.listen}/status"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback ops URL
            status = json.load(resp)
    except (urllib.error.URLError, OSError) as exc:
        print(f"dolphind is not answering at {url}: {exc}", file=sys.stderr)
        return 1
    json.dump(status, sys.stdout, indent=2)
    print()
    return 0


def _cmd_audit_verify(args: argparse.Namespace) -> int:
    from dolphind.store.audit import verify

    result = verify(args.path)
    if result.ok:
        print(f"{args.path}: ok, {result.lines} lines, chain intact")
        return 0
    print(f"{args.path}: broken at line {result.first_bad_line}: {result.reason}", file=sys.stderr)
    return 1


def _cmd_backtest(args: argparse.Namespace) -> int:
    from dolphind.backtest import run_backtest

    return run_backtest(args.data, args.out, args.config, getattr(args, "from"), args.to,
                        args.seed, args.force)


def _cmd_scan(args: argparse.Namespace) -> int:
    from dolphind.feed.history import HistoryError, load_history
    from dolphind.scan.offline import scan_history

    try:
        history = load_history(args.data, args.max_stale_bars)
    except HistoryError as exc:
        print(f"dolphind scan: {exc}", file=sys.stderr)
        return 2
    for note in history.notes:
        print(f"note: {note}", file=sys.stderr)
    n = scan_history(history.ts_ns, history.symbols, history.closes, args.out)
    print(f"{n} scans of {len(history.symbols)} symbols written to {args.out}")
    return 0


def _cmd_config_reference(args: argparse.Namespace) -> int:
    from dolphind.config_doc import metrics_markdown, reference_markdown

    sys.stdout.write(metrics_markdown() if args.metrics else reference_markdown())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dolphind", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", default="dolphind.toml", help="config file (default: %(default)s)")
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser("check-config", help="validate a config file; exit 2 on problems")
    check.add_argument("path")
    check.set_defaults(func=_cmd_check_config)

    status = sub.add_parser("status", help="print the running daemon's /status")
    status.add_argument("--config", default="dolphind.toml")
    status.set_defaults(func=_cmd_status)

    ref = sub.add_parser("config-reference", help="print every config key as a Markdown table")
    ref.add_argument("--metrics", action="store_true", help="print the metrics table instead")
    ref.set_defaults(func=_cmd_config_reference)

    bt = sub.add_parser("backtest", help="run the pipeline over history and write a report")
    bt.add_argument("--data", nargs="+", required=True,
                    help="OHLCV files or folders (Feather, Parquet, CSV)")
    bt.add_argument("--from", dest="from", default=None, help="first bar (ISO date/time, UTC)")
    bt.add_argument("--to", default=None, help="end (exclusive; ISO date/time, UTC)")
    bt.add_argument("--config", default=None,
                    help="config whose strategy, risk and execution settings are used")
    bt.add_argument("--out", default="backtest-out", help="report folder (default: %(default)s)")
    bt.add_argument("--seed", type=int, default=None, help="paper venue seed")
    bt.add_argument("--force", action="store_true", help="replace a previous run in --out")
    bt.set_defaults(func=_cmd_backtest)

    scan = sub.add_parser("scan", help="eigenscan historical bars into Arrow files")
    scan.add_argument("--data", nargs="+", required=True, help="OHLCV files or folders")
    scan.add_argument("--out", required=True, help="folder for the Arrow scan files")
    scan.add_argument("--max-stale-bars", type=int, default=12)
    scan.set_defaults(func=_cmd_scan)

    audit = sub.add_parser("audit", help="audit log tools")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="check the hash chain; exit 1 when broken")
    verify.add_argument("path")
    verify.set_defaults(func=_cmd_audit_verify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
