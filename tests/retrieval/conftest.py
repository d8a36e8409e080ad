"""Retrieval tests need the [rag] extra (sqlite-vec, sqlean-py, semantic-text-splitter)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_MISSING = [
    name
    for name in ("sqlite_vec", "semantic_text_splitter")
    if importlib.util.find_spec(name) is None
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _MISSING:
        return
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason=f"the [rag] extra is not installed ({', '.join(_MISSING)})")
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(skip)
