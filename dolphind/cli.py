"""dolphind: trade Binance USDT-M perpetual futures (paper, testnet or live), backtest the same
pipeline over history, and operate a running daemon from the shell."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Sequence

from dolphind import __version__

# Exit codes of the commands that talk to a running daemon (see EPILOG).
EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 3
DEFAULT_CONFIG = "dolphind.toml"

EPILOG = """\
examples:
  dolphind run --config /etc/dolphind/dolphind.toml
  dolphind check-config dolphind.toml
  dolphind status                          # one screen; --json for the whole document
  dolphind status --url http://10.0.0.5:9108
  dolphind positions | trades --limit 50 | profit | daily --days 30
  DOLPHIND_OPS_TOKEN=... dolphind halt --reason "news at 14:00"
  dolphind resume --token-file /etc/dolphind/ops.token
  dolphind flatten --reason "end of test"  # halts too, unless --no-halt
  dolphind backtest --data data/sample --out backtest-out
  dolphind top                             # the live view in the terminal (q quits)

exit codes:
  0  done
  1  the daemon did not answer, or answered an error (run: a stage kept crashing is 3)
  2  bad usage, config or token file (check-config: the config has problems)
  3  the daemon refused the control token (401/403)
"""


def _cmd_run(args: argparse.Namespace) -> int:
    from dolphind.app import build_daemon
    from dolphind.daemon import run

    return run(args.config, build_daemon)


def _cmd_check_config(args: argparse.Namespace) -> int:
    if args.path and args.config_flag and args.path != args.config_flag:
        print("dolphind check-config: give the config once (PATH or --config)", file=sys.stderr)
        return EXIT_USAGE
    args.path = args.path or args.config_flag or DEFAULT_CONFIG
    from dolphind.alpha.profile import load_config
    from dolphind.config import ConfigError
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
    from dolphind.config import describe_trading

    print(f"{args.path}: ok (config hash {cfg.hash}, mode {cfg.mode})")
    print(describe_trading(cfg))
    return 0


def _ask(args: argparse.Namespace, path: str, body: Any = None,
         control: bool = False) -> tuple[int, Any]:
    """Send one request to the daemon; (exit code, answer body). Problems go to stderr."""
    from dolphind.opsclient import ClientError, Unreachable, base_url, read_token, request

    # Like `run`, the config in the current folder is the default (when there is one).
    config = args.config or (DEFAULT_CONFIG if os.path.exists(DEFAULT_CONFIG) else None)
    try:
        base = base_url(args.url, config)
        token = read_token(args.token_file, config) if control else None
    except ClientError as exc:
        print(f"dolphind {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE, None
    if control and token is None:
        print(f"dolphind {args.command}: no control token: set DOLPHIND_OPS_TOKEN or pass "
              "--token-file (or set ops.token_file in --config)", file=sys.stderr)
        return EXIT_USAGE, None
    try:
        answer = request(base, path, body, token, args.timeout)
    except Unreachable as exc:
        print(f"dolphind {args.command}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE, None
    if answer.status in (401, 403):
        print(f"dolphind {args.command}: refused ({answer.status}): {_error_text(answer.body)}",
              file=sys.stderr)
        return EXIT_REFUSED, None
    if answer.status >= 400:
        print(f"dolphind {args.command}: {base}{path} answered {answer.status}: "
              f"{_error_text(answer.body)}", file=sys.stderr)
        return EXIT_UNREACHABLE, None
    return EXIT_OK, answer.body


def _error_text(body: Any) -> str:
    return str(body.get("error", body)) if isinstance(body, dict) else str(body)[:200]


def _show(args: argparse.Namespace, path: str, render: Callable[[Any], str],
          body: Any = None, control: bool = False) -> int:
    code, doc = _ask(args, path, body, control)
    if code != EXIT_OK:
        return code
    if args.json:
        json.dump(doc, sys.stdout, indent=2, sort_keys=True)
        print()
    else:
        print(render(doc))
    return EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    from dolphind.opsview import status_text

    return _show(args, "/status", status_text)


def _cmd_positions(args: argparse.Namespace) -> int:
    from dolphind.opsview import positions_text

    return _show(args, "/positions", positions_text)


def _cmd_trades(args: argparse.Namespace) -> int:
    from dolphind.opsview import trades_text

    return _show(args, f"/trades?limit={args.limit}", trades_text)


def _cmd_profit(args: argparse.Namespace) -> int:
    from dolphind.opsview import profit_text

    return _show(args, "/profit", profit_text)


def _cmd_daily(args: argparse.Namespace) -> int:
    from dolphind.opsview import daily_text

    return _show(args, f"/daily?days={args.days}", daily_text)


def _control_text(doc: Any) -> str:
    if not isinstance(doc, dict):
        return str(doc)
    state = f"HALTED ({doc.get('halt_reason') or '-'})" if doc.get("halted") else "trading"
    flat = "flatten requested; " if doc.get("flatten_requested") else ""
    return f"{flat}now {state}"


def _cmd_halt(args: argparse.Namespace) -> int:
    return _show(args, "/kill", _control_text, {"action": "halt", "reason": args.reason},
                 control=True)


def _cmd_resume(args: argparse.Namespace) -> int:
    return _show(args, "/kill", _control_text, {"action": "resume", "reason": args.reason},
                 control=True)


def _cmd_flatten(args: argparse.Namespace) -> int:
    return _show(args, "/flatten", _control_text,
                 {"halt": not args.no_halt, "reason": args.reason}, control=True)


def _cmd_audit_verify(args: argparse.Namespace) -> int:
    from dolphind.store.audit import verify

    anchor = None
    if getattr(args, "store", None):
        from dolphind.store.sqlite import read_audit_anchor

        try:
            anchor = read_audit_anchor(args.store)
        except Exception as exc:  # sqlite3.Error, OSError: say which file and why
            print(f"{args.store}: cannot read the store's audit anchor: {exc}", file=sys.stderr)
            return 2
        if anchor is None:
            print(f"{args.store}: no audit anchor in this store (written since issue #15)",
                  file=sys.stderr)
    result = verify(args.path, anchor)
    if result.ok:
        anchored = f", anchored by the store at line {anchor[0]}" if anchor else ""
        print(f"{args.path}: ok, {result.lines} lines, chain intact{anchored}")
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
    parser = argparse.ArgumentParser(prog="dolphind", description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"dolphind {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", default="dolphind.toml", help="config file (default: %(default)s)")
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser("check-config", help="validate a config file; exit 2 on problems")
    check.add_argument("path", nargs="?", default=None, help="the config file")
    # The same flag as run / status / backtest; the positional path stays for old scripts.
    check.add_argument("--config", dest="config_flag", default=None, metavar="PATH",
                       help="the config file (instead of the positional PATH)")
    check.set_defaults(func=_cmd_check_config)

    _ops_commands(sub)

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
    verify.add_argument("--store", default=None,
                        help="the SQLite store (dolphind.sqlite): the log must reach the line "
                             "the store last saw written (detects a truncated tail)")
    verify.set_defaults(func=_cmd_audit_verify)
    return parser


def _cmd_top(args: argparse.Namespace) -> int:
    """The Command Center's panels in the terminal (Textual), live from GET /ui/events."""
    from dolphind.opsclient import ClientError, base_url

    config = args.config or (DEFAULT_CONFIG if os.path.exists(DEFAULT_CONFIG) else None)
    try:
        base = base_url(args.url, config)
    except ClientError as exc:
        print(f"dolphind top: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from dolphind.tui.app import TopApp
    from dolphind.tui.source import bus_config

    try:
        bus = bus_config(config)  # [statebus] kind = "hazelcast": a line fed by its listeners
    except (OSError, ValueError, TypeError) as exc:
        print(f"dolphind top: {config}: [statebus]: {exc}", file=sys.stderr)
        return EXIT_USAGE
    TopApp(base, bus=bus).run()
    return EXIT_OK


def _daemon_flags() -> argparse.ArgumentParser:
    """The flags every command that talks to a running daemon shares."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("daemon")
    g.add_argument("--url", default=None,
                   help="the daemon's ops URL, e.g. http://127.0.0.1:9108 (default: [ops] listen "
                        "of --config)")
    g.add_argument("--config", default=None,
                   help="read [ops] listen and token_file from this config (only those: no "
                        "trading credentials are needed); default: ./dolphind.toml if it "
                        "exists, else http://127.0.0.1:9108")
    g.add_argument("--token-file", default=None,
                   help="file holding the control token (DOLPHIND_OPS_TOKEN wins over it)")
    g.add_argument("--timeout", type=float, default=5.0, help="seconds (default: %(default)s)")
    g.add_argument("--json", action="store_true", help="print the daemon's JSON document")
    return p


def _ops_commands(sub: Any) -> None:
    common = [_daemon_flags()]

    def add(name: str, func: Callable[[argparse.Namespace], int], help_text: str,
            ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, parents=common)
        p.set_defaults(func=func)
        return p

    add("status", _cmd_status, "a one-screen summary of the running daemon (GET /status)")
    add("positions", _cmd_positions, "open positions with marks and PnL (GET /positions)")
    trades = add("trades", _cmd_trades, "the latest closed trades (GET /trades)")
    trades.add_argument("--limit", type=int, default=20, choices=range(1, 10_001),
                        metavar="N", help="how many, newest first (default: %(default)s)")
    add("profit", _cmd_profit, "PnL, win rate, best and worst of every closed trade "
        "(GET /profit)")
    daily = add("daily", _cmd_daily, "realised PnL per UTC day (GET /daily)")
    daily.add_argument("--days", type=int, default=7, choices=range(1, 10_001), metavar="N",
                       help="how many days, newest first (default: %(default)s)")
    for name, func, what in (("halt", _cmd_halt, "stop new entries (exits still run); token"),
                             ("resume", _cmd_resume, "lift the halt, whoever holds it "
                              "(operator, governor, guardian, scheduler); token")):
        p = add(name, func, f"{what} (POST /kill)")
        p.add_argument("--reason", default="", help="written to the audit log")
    flat = add("flatten", _cmd_flatten, "close every position, and halt unless --no-halt; "
               "token (POST /flatten)")
    flat.add_argument("--reason", default="", help="written to the audit log")
    flat.add_argument("--no-halt", action="store_true",
                      help="close positions but leave entries allowed")
    add("top", _cmd_top, "the Command Center in the terminal: live strip, positions, orders, "
        "trades, vel_div, stages, plugins and the feed (GET /ui/events); q quits")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:  # `dolphind status --json | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
