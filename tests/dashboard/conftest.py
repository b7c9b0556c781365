"""The dashboard's browser tests run once, against the SQLite stack: what the browser shows
does not depend on the database (the API suites cover both)."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="the dashboard is checked once, on SQLite")
    for item in items:
        callspec = getattr(item, "callspec", None)
        if "tests/dashboard/" in str(item.fspath).replace("\\", "/") and callspec is not None \
                and "postgresql" in callspec.id:
            item.add_marker(skip)
