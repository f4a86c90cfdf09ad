"""README.md's generated tables match the code (scripts/gen_docs.py regenerates them)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

from gen_docs import render  # noqa: E402


def test_readme_tables_are_current() -> None:
    text = (REPO / "README.md").read_text()
    assert render(text) == text, "README.md is stale: run .venv/bin/python scripts/gen_docs.py"


def test_readme_starts_with_the_two_setup_commands() -> None:
    lines = [x for x in (REPO / "README.md").read_text().splitlines() if x.strip()]
    assert lines[0] == "# dolphind"
    assert lines[1:7:3] == ["```sh", "```sh"]
    assert "dolphind run" in lines[2] and lines[5] == "./scripts/test.sh"
