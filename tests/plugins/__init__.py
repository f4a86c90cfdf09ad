"""Helpers to install test plugins through real entry-point metadata (a dist-info folder)."""

from __future__ import annotations

import textwrap
from pathlib import Path

SAMPLE_PLUGIN = '''
"""A small plugin used by the tests; registered only through entry-point metadata."""
import asyncio
import json
from pathlib import Path

API = {api_version}


class SamplePlugin:
    API_VERSION = API
    name = "sample"
    version = "1.2.0"

    def __init__(self):
        self.settings = {{}}
        self.out = None
        self.bars = 0

    def validate(self, settings):
        problems = []
        if settings.get("explode_in_validate"):
            raise ValueError("validate blew up")
        for key in settings:
            if key not in ("threshold", "fail_on_bar", "out", "explode_in_validate", "slow_s"):
                problems.append(f"{{key}}: unknown key")
        t = settings.get("threshold", 1)
        if not isinstance(t, int) or isinstance(t, bool) or t < 0:
            problems.append("threshold: expected an integer >= 0")
        return problems

    async def start(self, ctx):
        self.settings = dict(ctx.settings)
        self.out = Path(self.settings["out"]) if "out" in self.settings else None
        self._write("start")

    async def reload(self, settings):
        self.settings = dict(settings)
        self._write("reload", threshold=self.settings.get("threshold"))

    async def stop(self):
        self._write("stop")
        await asyncio.sleep(self.settings.get("slow_s", 0))

    async def on_bar(self, bar):
        self.bars += 1
        await asyncio.sleep(self.settings.get("slow_s", 0))
        if self.settings.get("fail_on_bar"):
            raise RuntimeError("sample plugin fails on purpose")
        if self.bars == 1:
            self._write("first_bar", seq=bar.seq)

    def _write(self, event, **fields):
        if self.out is not None:
            with self.out.open("a") as f:
                f.write(json.dumps({{"event": event, **fields}}) + "\\n")
'''


def install_sample_plugin(site: Path, api_version: int | None = None,
                          entry_name: str = "sample") -> Path:
    """Write module + dist-info into ``site`` (a folder to put on sys.path / PYTHONPATH);
    the plugin declares ``api_version`` (default: the API this dolphind provides)."""
    if api_version is None:
        from dolphind.plugins import API_VERSION as api_version
    site.mkdir(parents=True, exist_ok=True)
    (site / "dolphind_sample_plugin.py").write_text(SAMPLE_PLUGIN.format(api_version=api_version))
    dist = site / "dolphind_sample_plugin-1.2.0.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text(textwrap.dedent("""\
        Metadata-Version: 2.1
        Name: dolphind-sample-plugin
        Version: 1.2.0
        """))
    (dist / "entry_points.txt").write_text(textwrap.dedent(f"""\
        [dolphind.plugins]
        {entry_name} = dolphind_sample_plugin:SamplePlugin
        """))
    (dist / "RECORD").write_text("")
    return site
