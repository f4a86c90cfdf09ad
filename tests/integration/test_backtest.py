"""`dolphind backtest` end to end, as a user runs it: real candles in, report out."""

from __future__ import annotations

import contextlib
import csv
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from dolphind.report.verify import verify_report
from tests.data_paths import CRYPTOFEED_INFO
from tests.data_paths import SET_1M as ONE_MINUTE
from tests.data_paths import SET_5M as FIVE_MINUTE
from tests.integration.harness import SAMPLE

pytestmark = pytest.mark.integration


def backtest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dolphind.cli", "backtest", *args],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("data,span", [
    (ONE_MINUTE, ("--from", "2025-05-10", "--to", "2025-05-14")),
    (FIVE_MINUTE, ("--from", "2023-07-18T11:15", "--to", "2023-08-03T12:30")),
])
def test_backtest_on_real_candles_agrees_with_its_trades(tmp_path: Path, data: Path,
                                                         span: tuple[str, ...]) -> None:
    out = tmp_path / "out"
    res = backtest("--data", str(data), *span, "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    for name in ("summary.json", "trades.csv", "report.html", "equity.png", "drawdown.png",
                 "vel_div.png", "pnl_by_exit_reason.png"):
        assert (out / name).stat().st_size > 0, name
    assert list((out / "scans").glob("*.arrow"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["bars"] > 1000
    assert summary["trades"] > 0, summary  # otherwise the agreement below proves nothing
    # The headline numbers agree with an independent recomputation from trades.csv.
    assert verify_report(out) == []
    # Issue 16: the report explains its inputs and each entry.
    why = json.loads((out / "explain.json").read_text())
    assert why["interval_differs"] and why["validation_bar_s"] == 5.0
    assert {d["name"]: d["profile_s"] for d in why["effective_durations"]} == {
        "lookback_s": 500.0, "max_hold_s": 600.0, "dc_lookback_s": 35.0}
    assert why["gate_counts"]["entered"] >= summary["trades"]
    assert len(why["entry_rankings"]) == why["gate_counts"]["entered"]
    assert all(sum(c["excluded_by"] == "" for c in r["candidates"]) == 1
               for r in why["entry_rankings"])
    assert why["funding_pnl_usdt"] is not None  # both sets carry funding files
    assert why["mc_gate"]["fallback"] is True
    # Every intent's fate is counted (an entry and an exit per closed trade at least).
    assert sum(why["intent_outcomes"].values()) >= 2 * summary["trades"]
    page = (out / "report.html").read_text()
    assert "Effective durations" in page and "Candidate rankings per entry" in page
    # The audit chain of the run verifies.
    audit = subprocess.run([sys.executable, "-m", "dolphind.cli", "audit", "verify",
                            str(out / "audit.jsonl")], capture_output=True, text=True, timeout=60)
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_two_runs_are_identical(tmp_path: Path) -> None:
    outputs = []
    for run in ("a", "b"):
        out = tmp_path / run
        res = backtest("--data", str(SAMPLE), "--out", str(out))
        assert res.returncode == 0, res.stderr[-3000:]
        with contextlib.closing(sqlite3.connect(out / "dolphind.sqlite")) as db:
            # The books as the run left them, bar by bar (the equity curve behind the report).
            equity = db.execute("SELECT * FROM equity_snapshots ORDER BY rowid").fetchall()
        outputs.append(((out / "trades.csv").read_bytes(), (out / "summary.json").read_bytes(),
                        equity))
    assert outputs[0][:2] == outputs[1][:2]
    assert len(outputs[0][2]) > 100 and outputs[0][2] == outputs[1][2]
    assert outputs[0][0].count(b"\n") > 1  # some trades happened: the comparison means something


def test_a_previous_run_is_not_overwritten_without_force(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert backtest("--data", str(SAMPLE), "--out", str(out), "--to", "2025-05-10T18:00").returncode == 0
    again = backtest("--data", str(SAMPLE), "--out", str(out))
    assert again.returncode == 2 and "holds a previous run" in again.stderr
    forced = backtest("--data", str(SAMPLE), "--out", str(out), "--force", "--to", "2025-05-10T18:00")
    assert forced.returncode == 0, forced.stderr[-2000:]


def test_malformed_inputs_give_clear_messages(tmp_path: Path) -> None:
    res = backtest("--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o1"))
    assert res.returncode == 2 and "no such file or folder" in res.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "BTCUSDT.feather").write_bytes(b"garbage")
    res = backtest("--data", str(bad), "--out", str(tmp_path / "o2"))
    assert res.returncode == 2 and "BTCUSDT.feather: cannot read" in res.stderr
    res = backtest("--data", str(SAMPLE), "--from", "2030-01-01", "--out", str(tmp_path / "o3"))
    assert res.returncode == 2 and "no bars between" in res.stderr
    res = backtest("--data", str(SAMPLE), "--from", "yesterday", "--out", str(tmp_path / "o4"))
    assert res.returncode == 2 and "replay.start: expected an ISO date" in res.stderr


def _messy_copy(dst: Path) -> Path:
    """Real sample candles made messy the ways users' files are: BTC with duplicated rows and
    out of time order, ETH starting a day later than the rest."""
    import pyarrow as pa
    import pyarrow.feather as feather

    dst.mkdir()
    for sym in ("BTC", "ETH", "SOL"):
        table = feather.read_table(SAMPLE / f"{sym}_USDT_USDT-1m-futures.feather")
        if sym == "BTC":
            head = table.slice(0, 50)
            table = pa.concat_tables([table.slice(50), head, head.slice(0, 7)])
        if sym == "ETH":
            table = table.slice(1440)
        feather.write_feather(table, dst / f"{sym}_USDT_USDT-1m-futures.feather")
    return dst


def test_messy_inputs_are_repaired_and_the_user_is_told(tmp_path: Path) -> None:
    data = _messy_copy(tmp_path / "messy")
    res = backtest("--data", str(data), "--out", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr[-3000:]
    told = [line for line in res.stderr.splitlines() if line.startswith("dolphind backtest: data: ")]
    assert any("BTC_USDT_USDT-1m-futures.feather: rows were not in time order; sorted" in t for t in told), told
    assert any("BTC_USDT_USDT-1m-futures.feather: 7 duplicated timestamps" in t for t in told), told
    assert any("different times" in t for t in told), told
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["run"]["data_notes"] == [t.removeprefix("dolphind backtest: data: ") for t in told]


def test_config_and_seed_reach_the_run_and_plugins_stay_out(tmp_path: Path) -> None:
    cfg = tmp_path / "bt.toml"
    cfg.write_text('mode = "paper"\n[plugins]\nenabled = ["guardian"]\n'
                   '[execution]\ncapital_usdt = 12345.0\n')
    out = tmp_path / "out"
    res = backtest("--data", str(SAMPLE), "--to", "2025-05-10T18:00", "--config", str(cfg),
                   "--seed", "7", "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "plugins are not run in a backtest (they act on wall-clock time): guardian" in res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["seed"] == 7
    assert summary["initial_capital_usdt"] == 12345.0


@pytest.mark.timeout(900)  # three backtests on a machine made busy on purpose
def test_three_runs_under_cpu_load_are_byte_identical(tmp_path: Path) -> None:
    """Issue 16: no wall clock decides anything in a backtest. A CPU burner makes every run
    slower and differently timed (the plugin veto budget, the health heartbeat and the settle
    timeout used to be wall-clock); trades, summary, explanation and audit stay identical."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])]
    try:
        outputs = []
        for run in ("a", "b", "c"):
            out = tmp_path / run
            res = backtest("--data", str(SAMPLE), "--out", str(out), "--seed", "7",
                           "--to", "2025-05-11T12:00")
            assert res.returncode == 0, res.stderr[-3000:]
            outputs.append(tuple((out / name).read_bytes() for name in
                                 ("trades.csv", "summary.json", "explain.json", "audit.jsonl")))
    finally:
        for b in burners:
            b.kill()
            b.wait()
    assert outputs[0] == outputs[1] == outputs[2]
    assert outputs[0][0].count(b"\n") > 5  # trades happened: the comparison means something
    # Every audit record carries market time (within the data's span), not the wall clock.
    stamps = [json.loads(line)["ts_ns"] for line in outputs[0][3].splitlines()]
    assert stamps and all(1746835200_000000000 <= t <= 1747094400_000000000 for t in stamps)


def test_positions_held_across_funding_times_pay_or_receive_funding(tmp_path: Path) -> None:
    """Issue 16: the sample's funding prints are settled on open positions at each funding
    time; the wallet (cash, equity, ROI) moves by them, the trades' PnL does not."""
    config = tmp_path / "hold.toml"
    config.write_text('[strategy]\nprofile = "hold-12h"\n[strategy.params]\nmax_hold_s = 43200.0\n')
    out = tmp_path / "out"
    res = backtest("--config", str(config), "--data", str(SAMPLE), "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "max_hold_s 43200 s -> 720 bars" in res.stderr
    why = json.loads((out / "explain.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    payments = why["funding_payments"]
    assert len(payments) >= 1, why["funding_pnl_usdt"]
    for p in payments:
        # explain.json rounds to 10 decimals
        assert p["amount_usdt"] == pytest.approx(-p["qty"] * p["mark"] * p["rate"], abs=1e-9)
        assert p["ts_ns"] % (8 * 3600 * 10**9) < 10**9  # at a funding time (00, 08, 16 UTC)
    total = sum(p["amount_usdt"] for p in payments)
    assert why["funding_pnl_usdt"] == pytest.approx(total)
    assert summary["funding_paid_usdt"] == pytest.approx(-total)
    audited = [json.loads(x)["data"] for x in (out / "audit.jsonl").read_text().splitlines()
               if json.loads(x)["event"] == "funding"]
    assert [a["amount_usdt"] for a in audited] == pytest.approx(
        [p["amount_usdt"] for p in payments], abs=1e-9)
    with contextlib.closing(sqlite3.connect(out / "dolphind.sqlite")) as db:
        initial, cash, realised, fees = db.execute(
            "SELECT initial_capital_usdt, cash_usdt, realised_pnl_usdt, fees_usdt FROM account"
        ).fetchone()
    assert cash == pytest.approx(initial + realised - fees + total, abs=1e-6)
    assert verify_report(out) == []  # the trades' own figures are unchanged by funding
    # Each settlement belongs to the trade that held the symbol at that funding time: its
    # trades.csv funding_usdt column (not in its pnl_usdt), the per-pair table and the page.
    with open(out / "trades.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    attributed = 0
    for r in rows:
        mine = [p["amount_usdt"] for p in payments if p["symbol"] == r["symbol"]
                and int(r["entry_ts_ns"]) <= p["ts_ns"] <= int(r["exit_ts_ns"])]
        attributed += len(mine)
        assert float(r["funding_usdt"]) == pytest.approx(sum(mine), abs=1e-9), r
    assert attributed >= 1
    with_funding = [r for r in rows if float(r["funding_usdt"]) != 0.0]
    assert with_funding
    for pair, g in summary["per_pair"].items():
        assert g["funding_usdt"] == pytest.approx(
            sum(float(r["funding_usdt"]) for r in rows if r["symbol"] == pair), abs=1e-9)
    page = (out / "report.html").read_text()
    assert "Funding (USDT)" in page and "PnL (USDT, excl. funding)" in page


BRACKETS = Path(__file__).resolve().parents[1] / "data" / "binance-leverage-brackets" / \
    "leverage_bracket.json"


def test_a_high_leverage_short_is_liquidated_by_its_symbols_brackets(tmp_path: Path) -> None:
    """Issue 16: liquidation end to end. A test profile sizes SOLUSDT shorts at ~21x of a
    10k account (~207k notional, SOLUSDT's 50k-250k bracket: 5 %, cum 1325, so maintenance
    ~9k): on data/sample's real candles a ~0.5 % adverse move takes the margin balance to
    maintenance before the drawdown posture halts it. The venue liquidates it; trades.csv,
    the summary, the report's per-exit-reason table and the audit say LIQUIDATION. Without the
    bracket file (the documented default, 0.5 %) the same trade is not liquidated."""
    base = ('[strategy]\nprofile = "liquidation-test"\n[strategy.params]\n'
            'max_hold_s = 43200.0\nfraction = 1.0\nmin_fraction = 1.0\n'
            'min_leverage = 23.0\nmax_leverage = 23.0\nabs_max_leverage = 23.0\n'
            '[risk]\nallowed_symbols = ["SOLUSDT"]\nmax_leverage = 125.0\n'
            'max_order_notional_usdt = 1000000000.0\nmax_symbol_exposure_usdt = 1000000000.0\n'
            'max_gross_exposure_usdt = 1000000000.0\n')
    runs = {}
    for name, extra in (("brackets", f'[execution]\nleverage_brackets = "{BRACKETS}"\n'),
                        ("default", "")):
        config = tmp_path / f"{name}.toml"
        config.write_text(base + extra)
        out = tmp_path / name
        res = backtest("--config", str(config), "--data", str(SAMPLE), "--out", str(out))
        assert res.returncode == 0, res.stderr[-3000:]
        with open(out / "trades.csv", newline="") as fh:
            runs[name] = (out, list(csv.DictReader(fh)))
    out, rows = runs["brackets"]
    liquidated = [r for r in rows if r["exit_reason"] == "LIQUIDATION"]
    assert liquidated, [(r["symbol"], r["exit_reason"]) for r in rows]
    first = liquidated[0]
    assert first["symbol"] == "SOLUSDT" and first["side"] == "SHORT"
    assert int(first["bars_held"]) >= 1  # a move took it there, not the entry itself
    notional = float(first["qty"]) * float(first["exit_price"])
    assert 50_000 <= notional < 250_000  # in the 5 % bracket
    assert float(first["exit_price"]) > float(first["entry_price"])  # adverse for a short
    summary = json.loads((out / "summary.json").read_text())
    assert summary["per_exit_reason"]["LIQUIDATION"]["trades"] == len(liquidated)
    assert summary["pnl_by_exit_reason"]["LIQUIDATION"]["trades"] == len(liquidated)
    page = (out / "report.html").read_text()
    assert "<tr><td>LIQUIDATION</td>" in page
    audit = [json.loads(x) for x in (out / "audit.jsonl").read_text().splitlines()]
    assert any(a["event"] == "order.submitted" and a["data"].get("reason") == "LIQUIDATION"
               for a in audit)
    assert verify_report(out) == []
    # The documented default (0.5 %) keeps the same short open past that move.
    _, default_rows = runs["default"]
    assert default_rows and default_rows[0]["entry_ts_ns"] == first["entry_ts_ns"]
    assert all(r["exit_reason"] != "LIQUIDATION" for r in default_rows)


def test_a_symbol_whose_data_ends_under_an_open_position_is_flagged_not_filled(
        tmp_path: Path) -> None:
    """Issue 16: a candle slice of data/sample where BCHUSDT's candles end at 15:00 while a
    12 h-hold short on it (entered 13:41) is open. Its exits are refused for want of a fresh
    price (never filled at the 15:00 close), the position stays open, and the end of the
    backtest flags it: console, summary.json, explain.json, report.html. On the full data
    the same short closes by MAX_HOLD."""
    import shutil

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.feather as feather

    cut_ns = 1_746_889_200 * 10**9  # 2025-05-10T15:00:00Z
    data = tmp_path / "cut"
    data.mkdir()
    for f in SAMPLE.iterdir():
        if f.name == "BCH_USDT_USDT-1m-futures.feather":
            t = feather.read_table(f)
            cut = pa.scalar(cut_ns, type=pa.int64()).cast(t.schema.field("date").type)
            feather.write_feather(t.filter(pc.less_equal(t.column("date"), cut)), data / f.name)
        else:
            shutil.copy(f, data / f.name)
    config = tmp_path / "hold.toml"
    config.write_text('[strategy]\nprofile = "hold-12h"\n[strategy.params]\nmax_hold_s = 43200.0\n')
    span = ("--to", "2025-05-11T04:00")
    runs = {}
    for name, src in (("full", SAMPLE), ("cut", data)):
        out = tmp_path / f"out-{name}"
        res = backtest("--config", str(config), "--data", str(src), "--out", str(out), *span)
        assert res.returncode == 0, res.stderr[-3000:]
        with open(out / "trades.csv", newline="") as fh:
            runs[name] = (out, res.stderr, list(csv.DictReader(fh)))
    _, _, full = runs["full"]
    bch = [r for r in full if r["symbol"] == "BCHUSDT"]
    assert bch and bch[0]["exit_reason"] == "MAX_HOLD"  # the control: it closes on full data
    entry_ns = int(bch[0]["entry_ts_ns"])
    assert entry_ns < cut_ns < int(bch[0]["exit_ts_ns"])

    out, stderr, rows = runs["cut"]
    assert all(r["symbol"] != "BCHUSDT" for r in rows)  # never closed at an old price
    audit = [json.loads(x) for x in (out / "audit.jsonl").read_text().splitlines()]
    fills = [a for a in audit if a["event"] == "fill" and a["data"].get("symbol") == "BCHUSDT"]
    assert [int(a["ts_ns"]) for a in fills] == [entry_ns]  # the entry, nothing after
    refused = [a for a in audit if a["event"] == "order.rejected"
               and "no fresh price for BCHUSDT" in a["data"].get("rule", "")]
    assert refused and all(a["ts_ns"] > cut_ns for a in refused)
    assert "positions open on a stale price at the end: BCHUSDT" in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["stale_positions_at_end"] == ["BCHUSDT"]
    why = json.loads((out / "explain.json").read_text())
    assert why["stale_positions_at_end"] == ["BCHUSDT"]
    page = (out / "report.html").read_text()
    assert "open on a stale price at the end</td><td>BCHUSDT" in page
    assert verify_report(out) == []


def test_irp_takes_the_next_asset_when_the_venue_does_not_list_the_chosen_one(
        tmp_path: Path) -> None:
    """Issue 15/16: IRP ranks only assets the venue can take. With a real exchangeInfo from
    July 2021 (before SUIUSDT was listed) and no fallback filters, the entries on which IRP
    chose SUIUSDT go to the next eligible asset, and the ranking names SUIUSDT
    ``venue_symbol``. Without the exchangeInfo, SUIUSDT is traded."""
    base = '[strategy]\nprofile = "hold-12h"\n[strategy.params]\nmax_hold_s = 43200.0\n'
    venue = (f'[execution]\nexchange_info = "{CRYPTOFEED_INFO}"\n'
             'paper_fallback_filters = false\n')
    runs = {}
    for name, text in (("any", base), ("listed", base + venue)):
        config = tmp_path / f"{name}.toml"
        config.write_text(text)
        out = tmp_path / name
        res = backtest("--config", str(config), "--data", str(SAMPLE), "--out", str(out))
        assert res.returncode == 0, res.stderr[-3000:]
        with open(out / "trades.csv", newline="") as fh:
            trades = list(csv.DictReader(fh))
        rankings = json.loads((out / "explain.json").read_text())["entry_rankings"]
        runs[name] = (trades, {r["ts_ns"]: r for r in rankings})
    any_trades, any_rankings = runs["any"]
    listed_trades, listed_rankings = runs["listed"]
    assert any(t["symbol"] == "SUIUSDT" for t in any_trades)
    assert all(t["symbol"] != "SUIUSDT" for t in listed_trades)
    # Same bar, same scan: IRP's pick was SUIUSDT; with the venue's word it is another asset.
    changed = [ts for ts, r in any_rankings.items()
               if r["symbol"] == "SUIUSDT" and ts in listed_rankings]
    assert changed, (sorted(any_rankings), sorted(listed_rankings))
    for ts in changed:
        r = listed_rankings[ts]
        assert r["symbol"] != "SUIUSDT"
        why = {c["symbol"]: c["excluded_by"] for c in r["candidates"]}
        assert why["SUIUSDT"] == "venue_symbol" and why[r["symbol"]] == "", r
