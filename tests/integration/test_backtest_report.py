"""A whole backtest of data/sample as a user runs it: the terminal shows the main tables, the
page has the freqtrade-style tables, the interactive charts and the trade list, and every new
figure is cross-checked by the independent verifier."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dolphind.report.verify import verify_report
from tests.integration.harness import SAMPLE

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("bt") / "out"
    res = subprocess.run([sys.executable, "-m", "dolphind.cli", "backtest", "--data", str(SAMPLE),
                          "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return out, res.stdout


def test_terminal_shows_the_tables_of_summary_json(run: tuple[Path, str]) -> None:
    out, stdout = run
    doc = json.loads((out / "summary.json").read_text())
    assert doc["trades"] > 0 and len(doc["per_pair"]) > 1
    for title in ("PER PAIR", "PER EXIT REASON", "LONG / SHORT", "SUMMARY"):
        assert title in stdout
    for pair, g in doc["per_pair"].items():
        row = next(line for line in stdout.splitlines() if line.startswith(pair + " "))
        assert f"{g['pnl_usdt']:+,.2f}" in row
        assert f"{g['wins']} / {g['draws']} / {g['losses']}" in row
    assert f"{doc['best_pair']['name']} {doc['best_pair']['pnl_usdt']:+,.2f} USDT" in stdout
    # profit factor printed sensibly (the old line printed a 16-digit float repr)
    pf = re.search(r"profit factor (\S+)", stdout)
    assert pf and re.fullmatch(r"\d+\.\d{3}|n/a|\u221e", pf.group(1)), pf


def test_every_figure_agrees_with_trades_csv(run: tuple[Path, str]) -> None:
    out, _ = run
    assert verify_report(out) == []
    doc = json.loads((out / "summary.json").read_text())
    assert doc["market_change"] is not None and len(doc["market_change_by_symbol"]) == 12
    # data/sample has funding prints: the paper venue settles them and the report shows the sum
    assert isinstance(doc["funding_paid_usdt"], float) and "funding" in doc["conventions"]
    assert re.search(r"<td>Funding paid</td><td>-?[\d,]+\.\d\d USDT</td>",
                     (out / "report.html").read_text())
    assert doc["drawdown_start_ts_ns"] < doc["drawdown_end_ts_ns"]


def test_page_has_tables_interactive_charts_and_the_trade_list(run: tuple[Path, str]) -> None:
    out, _ = run
    page = (out / "report.html").read_text()
    doc = json.loads((out / "summary.json").read_text())
    for heading in ("Per pair", "Per exit reason", "Long / short", "Best and worst",
                    "Equity and drawdown", f"Trade list ({doc['trades']} trades)"):
        assert heading in page, heading
    assert "uPlot" in page and 'id="equity-chart"' in page  # inlined: works offline
    assert not re.search(r'(src|href)="https?:', page)  # nothing fetched from outside
    series = json.loads(re.search(r'<script type="application/json" id="series">(.*?)</script>',
                                  page).group(1))  # type: ignore[union-attr]
    assert len(series["t"]) == len(series["equity"]) > 100
    assert series["equity"][-1] == pytest.approx(doc["final_equity_usdt"], abs=1e-3)
    # fees are costs: never in a gain-coloured cell (6th column of the group tables, 5th of
    # the exit-reason PnL table)
    rows = re.findall(r"<tr><td>(?:FIXED_TP|MAX_HOLD|SHORT|LONG|TOTAL)</td>(.*?)</tr>", page)
    assert rows
    for row in rows:
        cells = re.findall(r"<td[^>]*>[^<]*</td>", row)
        # (the group tables have 9 cells since issue 16 added the Funding column after Fees)
        fee_cell = cells[4] if len(cells) == 9 else cells[3]
        assert "class=" not in fee_cell, row
    # the Run block writes no Python reprs
    run_block = page.split("<h2>Run</h2>", 1)[1].split("</table>", 1)[0]
    assert "{" not in run_block and "[" not in run_block and "None" not in run_block
