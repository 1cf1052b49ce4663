"""Tests of `runner.store.open_store`: which store a database URL names."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.exceptions import StoreError
from runner.store import SQLiteStore, open_store


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///var/lib/isorunner/isorunner.db", "/var/lib/isorunner/isorunner.db"),
        ("sqlite:////var/lib/isorunner/isorunner.db", "/var/lib/isorunner/isorunner.db"),
    ],
)
def test_open_store_parses_an_absolute_sqlite_url(url: str, expected: str) -> None:
    """Both the three- and four-slash spellings name the same absolute file."""
    store = open_store(url)
    assert isinstance(store, SQLiteStore)
    assert store.path == Path(expected)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:///:memory:", "':memory:' is not allowed"),
        ("sqlite://relative/x.db", "not an absolute SQLite file path"),
        ("sqlite:///", "not an absolute SQLite file path"),
        ("sqlite:///x.db?mode=ro", "not an absolute SQLite file path"),
        ("postgresql://db.example/isorunner", "PostgreSQL is not supported yet"),
        ("mysql://db.example/isorunner", "unknown scheme 'mysql'"),
        ("/var/lib/isorunner.db", "unknown scheme ''"),
    ],
)
def test_open_store_refuses_unusable_urls(url: str, message: str) -> None:
    """An unusable database URL is refused with a message saying what to write."""
    with pytest.raises(StoreError, match=message):
        open_store(url)
