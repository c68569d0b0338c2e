"""The SQLite results store."""

import csv
import sqlite3

import pytest

from skiplab.store import Store, StoreError


def _add(store, h="abc", seed=0, status="complete", acc=0.5):
    spec = {"model": {"model": "mlp", "skip": "add", "depth": 2, "width": 8, "growth": None, "norm": "none"},
            "dataset": "mnist1d", "group": "g"}
    return store.add_run(spec, h, seed, status, {"test_accuracy": acc, "params": 10, "seconds": 1.0},
                         [(1, "test", "accuracy", acc)], "2026-01-01T00:00:00+00:00")


def test_round_trip_and_keys(tmp_path):
    with Store(tmp_path) as s:
        rid = _add(s)
        _add(s, seed=1, status="failed")
        assert s.finished_keys() == {("abc", 0)}  # a failed run is to be run again
        assert s.metrics(rid) == [(1, "test", "accuracy", 0.5)]
        assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with Store(tmp_path) as s:  # reopened: still there, provenance stored
        runs = s.runs()
        assert len(runs) == 2 and runs[0]["versions"]["torch"] and runs[0]["hardware"]["cores"]


def test_rerun_replaces_not_duplicates(tmp_path):
    with Store(tmp_path) as s:
        _add(s, status="failed")
        _add(s, status="complete", acc=0.7)
        runs = s.runs()
        assert len(runs) == 1 and runs[0]["status"] == "complete"
        assert s.db.execute("SELECT count(*) FROM metrics").fetchone()[0] == 1


def test_export_csv(tmp_path):
    with Store(tmp_path) as s:
        _add(s)
        assert s.export_csv(tmp_path / "runs.csv") == 1
    with open(tmp_path / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["skip"] == "add" and rows[0]["test_accuracy"] == "0.5"


def test_missing_and_corrupt_stores(tmp_path):
    with pytest.raises(StoreError, match="no results store"):
        Store(tmp_path / "none", create=False)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "runs.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable results store"):
        Store(tmp_path / "bad")


def test_foreign_sqlite_file(tmp_path):
    db = sqlite3.connect(tmp_path / "runs.db")
    db.execute("CREATE TABLE runs (x INTEGER)")
    db.commit()
    db.close()
    with pytest.raises(StoreError):
        Store(tmp_path).runs()


def test_reading_a_foreign_sqlite_file_changes_nothing(tmp_path):
    import sqlite3

    from skiplab.store import Store, StoreError
    path = tmp_path / "runs.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE other (x)")
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not a skiplab results store"):
        Store(tmp_path, create=False)
    assert path.read_bytes() == before
    with sqlite3.connect(path) as db:
        assert [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["other"]
