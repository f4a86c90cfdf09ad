"""Helpers for writing dolphind plugins (the bundled M-series use them like any third party).

- ``settings``: a ``[plugins.<name>]`` table -> a frozen dataclass, with key-path problems;
- ``figures``: the daemon's live figures read from its metrics registry;
- ``windows``: counts over a sliding time window from cumulative counters;
- ``files``: JSONL appends and atomic JSON state files (blocking: call via asyncio.to_thread).
"""
