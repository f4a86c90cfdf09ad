"""Regenerate the files in this folder from the raw captures named in PROVENANCE.md.

    .venv/bin/python tests/data/ws/derive.py DATA_DIR

DATA_DIR holds the two source folders (the cryptofeed capture and the nautilus_trader fixtures).
Nothing in the test run calls this: the derived files are committed.

Copies the real aggTrade and bookTicker frames unchanged, and derives depth5@500ms frames by
replaying the real diff-depth stream on top of the real REST snapshots (Binance's documented
local order book procedure), plus a synthetic !markPrice@arr@1s stream (see PROVENANCE.md).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CRYPTOFEED = "binance-um-ws-capture-2021-07-22_cryptofeed"
NAUTILUS = "binance-fixtures_nautilus-trader"


def frames(path: Path) -> list[tuple[str, dict, str]]:
    out = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("wss://"):
            continue
        ts, raw = line.split(": ", 1)
        out.append((ts, json.loads(raw), line))
    return out


def snapshots(path: Path) -> dict[str, dict]:
    out = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        url, rest = line.split(" -> ", 1)
        _, body = rest.split(": ", 1)
        sym = url.split("symbol=")[1].split("&")[0]
        out[sym] = json.loads(body)
    return out


def derive_depth5(recs: list[tuple[str, dict, str]], snaps: dict[str, dict]) -> list[str]:
    books: dict[str, dict] = {}
    for sym, snap in snaps.items():
        books[sym] = {"bids": {p: q for p, q in snap["bids"]}, "asks": {p: q for p, q in snap["asks"]},
                      "last_id": snap["lastUpdateId"], "prev_u": None, "next_emit": 0}
    lines = []
    for ts, obj, _ in recs:
        if not obj["stream"].endswith("@depth@100ms"):
            continue
        d = obj["data"]
        b = books[d["s"]]
        if b["prev_u"] is None:
            if d["u"] < b["last_id"]:
                continue  # older than the snapshot
            assert d["U"] <= b["last_id"] <= d["u"], ("first event does not bridge", d["s"])
        else:
            assert d["pu"] == b["prev_u"], ("sequence break", d["s"])
        b["prev_u"] = d["u"]
        for side, key in (("bids", "b"), ("asks", "a")):
            for p, q in d[key]:
                if float(q) == 0.0:
                    b[side].pop(p, None)
                else:
                    b[side][p] = q
        if d["E"] < b["next_emit"]:
            continue
        b["next_emit"] = (d["E"] // 500 + 1) * 500
        bids = sorted(b["bids"].items(), key=lambda kv: -float(kv[0]))[:5]
        asks = sorted(b["asks"].items(), key=lambda kv: float(kv[0]))[:5]
        frame = {"stream": f"{d['s'].lower()}@depth5@500ms",
                 "data": {"e": "depthUpdate", "E": d["E"], "T": d["T"], "s": d["s"],
                          "U": d["U"], "u": d["u"], "pu": d["pu"],
                          "b": [[p, q] for p, q in bids], "a": [[p, q] for p, q in asks]}}
        lines.append(f"{ts}: {json.dumps(frame, separators=(',', ':'))}")
    return lines


def derive_mark_price(recs: list[tuple[str, dict, str]]) -> list[str]:
    mids: dict[str, float] = {}
    lines = []
    next_emit = 0
    for ts, obj, _ in recs:
        d = obj["data"]
        if obj["stream"].endswith("@bookTicker"):
            mids[d["s"]] = (float(d["b"]) + float(d["a"])) / 2
        E = d.get("E", 0)
        if E >= next_emit and mids:
            if next_emit:
                second = next_emit
                items = [{"e": "markPriceUpdate", "E": second, "s": s, "p": f"{m:.8f}",
                          "i": f"{m:.8f}", "P": f"{m:.8f}", "r": "0.00010000",
                          "T": 1626998400000} for s, m in sorted(mids.items())]
                lines.append(f"{ts}: " + json.dumps({"stream": "!markPrice@arr@1s", "data": items},
                                                     separators=(",", ":")))
            next_emit = (E // 1000 + 1) * 1000
    return lines


def main(shared: Path) -> None:
    src = shared / CRYPTOFEED
    recs = frames(src / "BINANCE_FUTURES.ws.1.0")
    keep = {"aggTrade": [], "bookTicker": []}
    for _, obj, line in recs:
        kind = obj["stream"].split("@", 1)[1]
        if kind in keep:
            keep[kind].append(line)
    (HERE / "um_2021-07-22_aggTrade.txt").write_text("\n".join(keep["aggTrade"]) + "\n")
    (HERE / "um_2021-07-22_bookTicker.txt").write_text("\n".join(keep["bookTicker"]) + "\n")
    depth = derive_depth5(recs, snapshots(src / "BINANCE_FUTURES.http.0.0"))
    (HERE / "um_2021-07-22_depth5_500ms.derived.txt").write_text("\n".join(depth) + "\n")
    mark = derive_mark_price(recs)
    (HERE / "um_2021-07-22_markPrice_arr_1s.synthetic.txt").write_text("\n".join(mark) + "\n")
    fx = shared / NAUTILUS / "crates/adapters/binance/test_data/futures/market_data_json"
    dst = HERE / "nautilus"
    dst.mkdir(exist_ok=True)
    for name in ("agg_trade_stream.json", "mark_price_stream.json", "book_ticker_stream.json"):
        shutil.copyfile(fx / name, dst / name)
    shutil.copyfile(shared / NAUTILUS / "tests/integration_tests/adapters/binance/resources/"
                    "ws_messages/ws_futures_depth_update.json", dst / "ws_futures_depth_update.json")
    print(f"aggTrade {len(keep['aggTrade'])}, bookTicker {len(keep['bookTicker'])}, "
          f"depth5 {len(depth)}, markPrice {len(mark)}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: derive.py DATA_DIR (the folder holding the captures named in PROVENANCE.md)")
    main(Path(sys.argv[1]))
