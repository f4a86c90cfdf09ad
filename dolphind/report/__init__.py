"""Backtest reporting: metrics over closed trades and an equity series, the files that carry
them (summary.json, trades.csv, PNG charts, report.html), a terminal progress bar, and an
independent re-check of summary.json against trades.csv.

Nothing here knows the pipeline's internals: the backtest hands over ``ClosedTrade`` and
``EquityPoint`` values (``model.py``) and, optionally, the vel_div series.
"""
