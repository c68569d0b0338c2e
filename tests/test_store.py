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


def test_an_empty_store_file_is_refused_by_a_reader_and_left_as_it_is(tmp_path):
    # SQLite takes 0 bytes for a new database: `runs list` and `report` wrote a store there
    (tmp_path / "runs.db").write_bytes(b"")
    with pytest.raises(StoreError, match=r"runs.db is empty \(0 bytes\), not a results store"):
        Store(tmp_path, create=False)
    assert (tmp_path / "runs.db").stat().st_size == 0
    with Store(tmp_path) as store:  # a command that trains starts a new store there
        assert store.runs() == []


def test_an_empty_path_is_no_store_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Path("") is here: --out '' made a store in the current folder
    for create in (True, False):
        with pytest.raises(StoreError, match="the results folder is an empty path"):
            Store("", create=create)
    assert list(tmp_path.iterdir()) == []


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


# -- nothing is lost: non-finite numbers, foreign files, corrupt rows ----------------------
def _strict(text):
    """JSON as the standard reads it: NaN and Infinity are not JSON."""
    import json

    def refuse(name):
        raise ValueError(f"{name} in stored JSON")
    return json.loads(text, parse_constant=refuse)


def test_non_finite_curves_and_results_are_stored_as_diverged(tmp_path):
    nan, inf = float("nan"), float("inf")
    spec = {"model": {"model": "mlp", "skip": "plain", "depth": 8, "width": 8, "norm": "none"}, "dataset": "mnist1d"}
    result = {"status": "complete", "test_accuracy": 0.1, "test_loss": inf, "message": "", "seconds": 1.0,
              "diagnostics": {"composite_gain_forward": nan}}
    curves = [(1, "test", "loss", 2.3), (3, "train", "loss", -inf), (2, "test", "loss", nan), (3, "test", "loss", 1e30)]
    with Store(tmp_path) as s:
        rid = s.add_run(spec, "nan", 0, "complete", result, curves, "t")
        finite = s.add_run(spec, "ok", 0, "complete", {"test_accuracy": 0.5, "message": ""}, [(1, "test", "loss", 1.0)], "t")
        run, ok = s.runs()  # the earliest non-finite point is the reason
        assert (run["status"], run["result"]["status"]) == ("diverged", "diverged")
        assert run["result"]["message"] == "test loss became nan at step 2"
        assert run["result"]["test_loss"] is None and run["result"]["diagnostics"]["composite_gain_forward"] is None
        assert run["result"]["test_accuracy"] == 0.1  # the finite numbers are kept
        got = s.metrics(rid)
        assert [(st, sp, n) for st, sp, n, _ in got] == [(1, "test", "loss"), (2, "test", "loss"),
                                                         (3, "test", "loss"), (3, "train", "loss")]
        assert [v for *_, v in got][::2] == [2.3, 1e30] and all(v != v for v in [got[1][3], got[3][3]])  # nan
        assert s.db.execute("SELECT count(*) FROM metrics WHERE value IS NULL").fetchone()[0] == 2
        for text, in s.db.execute("SELECT result FROM runs"):
            _strict(text)
        assert ok["status"] == "complete" and s.metrics(finite) == [(1, "test", "loss", 1.0)]
    # a run already diverged keeps its own reason; a failed one stays failed
    with Store(tmp_path / "b") as s:
        s.add_run(spec, "d", 0, "diverged", {"message": "loss became nan at step 5", "test_loss": None},
                  [(4, "test", "loss", nan)], "t")
        s.add_run(spec, "f", 0, "failed", {"message": "boom", "x": inf}, [], "t")
        d, f = s.runs()
        assert (d["status"], d["result"]["message"]) == ("diverged", "loss became nan at step 5")
        assert (f["status"], f["result"]["x"]) == ("failed", None)


def test_a_store_from_before_null_metrics_takes_a_nan_run(tmp_path):
    """Stores made when ``metrics.value`` was NOT NULL: unchanged until a non-finite value
    comes, then the table is rebuilt in the same transaction, every earlier point kept."""
    from skiplab import store as store_module

    old = store_module.SCHEMA.replace("value REAL ", "value REAL NOT NULL ")
    assert old != store_module.SCHEMA
    db = sqlite3.connect(tmp_path / "runs.db")
    db.executescript(old)
    db.close()
    notnull = "SELECT \"notnull\" FROM pragma_table_info('metrics') WHERE name = 'value'"
    with Store(tmp_path) as s:
        first = _add(s, h="a")
        assert s.db.execute(notnull).fetchone()[0] == 1  # nothing to change yet
        spec = s.runs()[0]["spec"]
        s.add_run(spec, "b", 0, "complete", {"test_accuracy": 0.1}, [(1, "test", "loss", float("nan"))], "t")
        assert s.db.execute(notnull).fetchone()[0] == 0
        assert s.metrics(first) == [(1, "test", "accuracy", 0.5)]
        assert [r["status"] for r in s.runs()] == ["complete", "diverged"]
        assert s.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert s.db.execute("PRAGMA foreign_key_check").fetchall() == []
        s.db.execute("DELETE FROM runs WHERE spec_hash = 'b'")  # the rebuilt table still cascades
        assert s.db.execute("SELECT count(*) FROM metrics").fetchone()[0] == 1


def _foreign(path):
    with sqlite3.connect(path / "runs.db") as db:
        db.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT)")
        db.execute("INSERT INTO accounts (owner) VALUES ('someone')")
    db.close()
    return (path / "runs.db").read_bytes()


def test_writing_a_foreign_sqlite_file_is_refused_before_it_is_touched(tmp_path):
    before = _foreign(tmp_path)
    with pytest.raises(StoreError, match="not a skiplab results store; give --out another folder"):
        Store(tmp_path)
    assert (tmp_path / "runs.db").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.db"]  # no -wal, -shm or journal either


def test_an_empty_or_older_store_is_not_foreign(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "runs.db").write_bytes(b"")  # an empty file: a new store
    with Store(tmp_path / "a") as s:
        _add(s)
    (tmp_path / "b").mkdir()  # a store from before claims, artifacts and experiments existed
    with sqlite3.connect(tmp_path / "b" / "runs.db") as db:
        db.executescript(store_schema_before_claims())
    db.close()
    with Store(tmp_path / "b") as s:
        _add(s)
        assert len(s.runs()) == 1


def store_schema_before_claims():
    from skiplab.store import SCHEMA
    return SCHEMA.split("CREATE TABLE IF NOT EXISTS claims")[0]


def _corrupt_store(path):
    """Five runs, three of them made unreadable behind the store's back, one curve point too."""
    with Store(path) as s:
        ids = [_add(s, h=f"h{i}") for i in range(5)]
    db = sqlite3.connect(path / "runs.db")
    db.execute("UPDATE runs SET result = '{\"test_accuracy\": 0.5,' WHERE id = ?", (ids[1],))  # cut short
    db.execute("UPDATE runs SET spec = '[1, 2]' WHERE id = ?", (ids[2],))  # JSON, but not a spec
    db.execute("UPDATE runs SET result = '{\"params\": 10, \"seconds\": 1.0}' WHERE id = ?", (ids[3],))  # no metric
    db.execute("UPDATE metrics SET value = 'oops' WHERE run_id = ?", (ids[4],))
    db.commit()
    db.close()
    return ids


def test_a_corrupt_finished_row_is_trained_again_and_replaced(tmp_path):
    # every reader skips it, so kept as finished its configuration could never complete:
    # `skiplab train` said '1/1 done' and its table had 0 seeds, however often it ran
    import warnings

    from skiplab.store import StoreWarning
    ids = _corrupt_store(tmp_path)
    with Store(tmp_path) as s:
        assert s.finished_keys() == {("h0", 0), ("h4", 0)}  # h4's row reads; one curve point does not
        assert s.claim("h1", 0) == "claimed" and s.claim("h0", 0) == "done"
        assert _add(s, h="h1", acc=0.75) != ids[1]  # replaced: a new row
        assert _add(s, h="h0", acc=0.25) == ids[0]  # a readable finished row is kept, as before
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StoreWarning)  # h2's and h3's rows still warn
            runs = {r["spec_hash"]: r for r in s.runs()}
        assert runs["h1"]["result"]["test_accuracy"] == 0.75 and runs["h0"]["result"]["test_accuracy"] == 0.5


def test_a_corrupt_row_is_skipped_with_a_warning_naming_its_key(tmp_path):
    from skiplab.store import StoreWarning
    ids = _corrupt_store(tmp_path)
    with Store(tmp_path, create=False) as s:
        with pytest.warns(StoreWarning) as caught:
            runs = s.runs()
        assert [r["id"] for r in runs] == [ids[0], ids[4]]
        messages = [str(w.message) for w in caught]
        assert len(messages) == 3
        assert "run h1 seed 0" in messages[0] and "its result is not valid JSON" in messages[0]
        assert "run h2 seed 0" in messages[1] and "its spec is not a JSON object" in messages[1]
        assert "run h3 seed 0" in messages[2] and "complete but its result has no test_accuracy" in messages[2]
        with pytest.warns(StoreWarning, match=f"run id {ids[4]} .*test accuracy at step 1 is not a number"):
            assert s.metrics(ids[4]) == []
        assert s.metrics(ids[0]) == [(1, "test", "accuracy", 0.5)]
