"""Docs that are generated must match the code."""

from __future__ import annotations

from tests.helpers import ROOT
from worker.configdoc import BEGIN, END, markdown_table


def test_readme_configuration_table_is_current() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index(BEGIN) + len(BEGIN) : readme.index(END)].strip()
    assert table == markdown_table(), "regenerate with: python -m worker config --markdown"
