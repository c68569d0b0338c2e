"""The results store: one SQLite file (``DIR/runs.db``) of runs and their metrics.

* A run is keyed by ``(spec_hash, seed)``; a finished run (``complete`` or ``diverged``)
  is never run again, so re-running a study resumes it.
* A run's row and all its metrics are written in one transaction when it finishes: a
  study killed at any point (Ctrl-C, ``kill -9``) leaves every finished run whole and no
  half-written one. WAL mode lets readers (``skiplab runs list``) look while a study writes.
* In each command one process writes (the parent); workers return results. Several
  commands may share a store (two ``skiplab study`` on one ``--out``): writes wait for the
  lock (busy timeout), a finished row is never replaced, and before training a run a
  command *claims* it (table ``claims``), so that two commands never train the same run.
  A claim is a lease: its holder renews it while it lives (:class:`Lease`); a claim whose
  holder is a dead process on this host, or whose lease ran out (a holder on another
  host that stopped renewing), is stale and may be taken over.
* Nothing is lost: a NaN or infinity in a run's result or curves is stored, the run as
  ``diverged`` with the first such value as its reason (:func:`finite_run`), the value
  as JSON null in the result and SQL NULL in the metrics (read back as ``float('nan')``).
* A SQLite file that is not a skiplab store is refused, for reading and for writing,
  before anything is written into it; a corrupt row (JSON that does not decode, a
  complete run without its metric) is skipped by the readers with a
  :class:`StoreWarning` that names its key, and the other rows are read; a command that
  trains its configuration counts it as not stored, trains it again and replaces it.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import os
import socket
import sqlite3
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Iterable

from .errors import UserError
from .provenance import hardware, versions

FINISHED = ("complete", "diverged")
ROW_COLUMNS = ("id", "spec_hash", "seed", "status", "spec", "result", "started_at", "finished_at", "versions",
               "hardware")  # what Store.runs reads of a run

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    spec_hash TEXT NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL,              -- complete | diverged | failed
    spec TEXT NOT NULL,                -- RunSpec as JSON
    result TEXT NOT NULL,              -- RunResult summary as JSON
    started_at TEXT NOT NULL,          -- UTC, ISO 8601
    finished_at TEXT NOT NULL,
    versions TEXT NOT NULL,            -- JSON: skiplab, python, torch, numpy
    hardware TEXT NOT NULL,            -- JSON: cpu, cores, gpu, ...
    UNIQUE (spec_hash, seed)
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    split TEXT NOT NULL,               -- train | test
    name TEXT NOT NULL,                -- loss | accuracy | ...
    value REAL                         -- NULL: not finite (NaN or infinite; the run is diverged)
);
CREATE INDEX IF NOT EXISTS metrics_run ON metrics(run_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS claims (    -- runs being trained now, by which command
    spec_hash TEXT NOT NULL,
    seed INTEGER NOT NULL,
    owner TEXT NOT NULL,               -- the Store's owner id: host:pid:random
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    expires REAL NOT NULL,             -- unix time; renewed by the holder's Lease
    PRIMARY KEY (spec_hash, seed)
);
CREATE TABLE IF NOT EXISTS artifacts (  -- a run's trained weights, where an experiment needs them
    run_id INTEGER PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
    data BLOB NOT NULL                 -- torch.save of the state dict
);
CREATE TABLE IF NOT EXISTS experiments (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,                -- skiplab experiment NAME
    quick INTEGER NOT NULL,            -- 1 for --quick
    result TEXT NOT NULL,              -- JSON: claim, outcome, numbers
    started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    versions TEXT NOT NULL,
    hardware TEXT NOT NULL
);
"""


# A claim's lease: renewed every LEASE_RENEW seconds, stale LEASE_SECONDS after the last
# renewal. Only a holder on another host (a store on a shared disk) waits this long to be
# found dead; on this host a dead holder's pid says so at once.
LEASE_SECONDS = 60.0
LEASE_RENEW = 10.0
HOST = socket.gethostname()

# Stores this process opened to write, and how many runs it stored in each: what
# ``skiplab`` says when Ctrl-C stops a command (``interrupted_note``).
_WRITTEN: dict[Path, int] = {}


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def begin_command() -> None:
    """A command begins (``skiplab.cli.main``): forget the stores earlier ones wrote."""
    _WRITTEN.clear()


def interrupted_note() -> str:
    """One line for a command stopped by Ctrl-C: what is stored, and how to go on."""
    if not _WRITTEN:
        return "interrupted; nothing was stored; run the same command again to start over"
    path, new = list(_WRITTEN.items())[-1]
    try:
        db = sqlite3.connect(path, timeout=5)
        try:
            total = db.execute("SELECT count(*) FROM runs").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return f"interrupted; {new} runs stored in {path} by this command; run the same command again to resume"
    return (f"interrupted; {total} runs stored in {path} ({new} by this command); "
            "run the same command again to resume")


class StoreError(UserError):
    """The store is missing, unreadable or not a skiplab store."""


class StoreWarning(UserWarning):
    """A stored row that cannot be read (its key named) was skipped; the others were read."""


# Columns of ``runs`` that say a file is a skiplab store (every version has had them).
RUNS_COLUMNS = {"spec_hash", "seed", "status", "spec", "result"}
# What every table of runs shows of a spec's model: a row without them cannot be listed.
MODEL_KEYS = ("model", "skip", "depth", "width")


def _nonfinite(value: Any, path: str = "") -> list[tuple[str, float]]:
    """(where, value) of every float in ``value`` (nested dicts and lists) that is not finite."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [(path, value)]
    if isinstance(value, dict):
        return [bad for k, v in value.items() for bad in _nonfinite(v, f"{path}.{k}" if path else str(k))]
    if isinstance(value, (list, tuple)):
        return [bad for i, v in enumerate(value) for bad in _nonfinite(v, f"{path}[{i}]")]
    return []


def _nulled(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _nulled(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nulled(v) for v in value]
    return value


def finite_run(status: str, result: dict[str, Any], curves: Iterable[tuple[int, str, str, float]]
               ) -> tuple[str, dict[str, Any], list[tuple[int, str, str, float | None]]]:
    """A run as it is stored: every NaN or infinity in its result made null and in its
    curves None (SQL NULL), and a ``complete`` run that held one made ``diverged``, its
    message naming the first (a curve's earliest point, else the result field). Such a
    run trained on an overflowing model: the loss the engines watch stayed finite while
    an evaluation's did not (SGD at lr 60 on a plain MLP: a test loss of nan at step 4,
    finite again later). Its row was unwritable before (``metrics.value`` is NOT NULL in
    older stores, and SQLite stores NaN as NULL), which lost every sibling seed."""
    curves = [tuple(c) for c in curves]
    bad_curves = sorted((c for c in curves if isinstance(c[3], float) and not math.isfinite(c[3])),
                        key=lambda c: c[0])
    bad_result = _nonfinite(result)
    if not bad_curves and not bad_result:
        return status, result, curves
    if status == "complete":
        if bad_curves:
            step, split, name, value = bad_curves[0]
            reason = f"{split} {name} became {value} at step {step}"
        else:
            where, value = bad_result[0]
            reason = f"{where} was {value} at the end of training"
        status, result = "diverged", {**result, "message": reason}
        if "status" in result:  # a RunResult summary says its status too
            result["status"] = status
    return status, _nulled(result), [(st, sp, n, None if isinstance(v, float) and not math.isfinite(v) else v)
                                      for st, sp, n, v in curves]


class Store:
    """``Store(DIR)`` opens (creating if needed) ``DIR/runs.db``."""

    def __init__(self, directory: str | os.PathLike, create: bool = True):
        if str(directory) == "":  # Path("") is the current folder: a store there by accident
            raise StoreError("store: the results folder is an empty path; give a folder (--out DIR)")
        self.dir = Path(directory)
        self.path = self.dir / "runs.db"
        if not create and not self.path.is_file():
            raise StoreError(f"store: no results store at {self.path} (run `skiplab study --out {self.dir}` first)")
        if not create and self.path.stat().st_size == 0:
            # SQLite would take it for a new database and a reading command would write one
            raise StoreError(f"store: {self.path} is empty (0 bytes), not a results store; move it away, or train "
                             f"into {self.dir} to start a new store")
        try:
            if create:
                self.dir.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE below), so
            # that a read-then-write never fails on a snapshot another process made stale.
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            if not self._ours():
                # an existing SQLite file that is not a skiplab store: neither reading nor
                # writing may change anything in it (WAL mode would rewrite its header)
                self.db.close()
                raise StoreError(f"store: {self.path} is a SQLite file but not a skiplab results store"
                                 + ("; give --out another folder" if create else ""))
            self._wal()
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.executescript(SCHEMA)
            self.db.execute("SELECT count(*) FROM runs").fetchone()
        except (sqlite3.DatabaseError, OSError) as e:
            raise StoreError(f"store: {self.path} is not a usable results store ({e})") from None
        self.owner = f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        if create:
            _WRITTEN.setdefault(self.path, 0)

    def _ours(self) -> bool:
        """Whether the file is a skiplab store, or empty (new): it has no table, or a
        ``runs`` table with skiplab's columns. Reads only."""
        tables = {name for (name,) in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            return True
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(runs)")}
        return RUNS_COLUMNS <= columns

    def _wal(self) -> None:
        """WAL mode. Switching to it takes an exclusive lock, which SQLite does not wait
        for: two commands opening a new store at once retry here rather than fail."""
        for attempt in range(100):
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or attempt == 99:
                    raise
                time.sleep(0.05)

    def _write(self):
        """A write transaction that takes the write lock at once (waiting up to the busy
        timeout), so that what it reads is still true when it writes."""
        return _Immediate(self.db)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writing ------------------------------------------------------------------------
    def finished_keys(self) -> set[tuple[str, int]]:
        """The keys of the finished runs that can be read: a corrupt row (:meth:`_row_problem`),
        which every reader skips, counts as not stored, so it is trained again and replaced
        (kept as finished, its configuration could never be completed)."""
        rows = self.db.execute(f"SELECT {', '.join(ROW_COLUMNS)} FROM runs WHERE status IN {FINISHED}")
        return {(d["spec_hash"], d["seed"]) for d in (dict(zip(ROW_COLUMNS, r)) for r in rows)
                if not self._row_problem(d)}

    def _readable_row(self, spec_hash: str, seed: int) -> dict[str, Any] | None:
        """The run stored under this key, decoded, if there is one and it can be read; a
        corrupt row is neither finished nor just tried: it is trained again (finished_keys)."""
        row = self.db.execute(f"SELECT {', '.join(ROW_COLUMNS)} FROM runs WHERE spec_hash = ? AND seed = ?",
                              (spec_hash, seed)).fetchone()
        d = dict(zip(ROW_COLUMNS, row)) if row else None
        return d if d and not self._row_problem(d) else None

    def add_run(self, spec: dict[str, Any], spec_hash: str, seed: int, status: str, result: dict[str, Any],
                curves: Iterable[tuple[int, str, str, float]], started_at: str,
                run_versions: dict | None = None, run_hardware: dict | None = None,
                artifact: bytes | None = None) -> int:
        """Store a finished run and its metrics atomically and drop its claim; a previous
        row with the same key (a failed attempt) is replaced, but a finished one is kept
        (another command stored it first: its row stays, and its id is returned).
        ``artifact``: the trained weights (bytes), stored in the same transaction, so a
        run is never stored without the model an experiment needs of it. A NaN or infinity
        in ``result`` or ``curves`` is stored as null, the run as ``diverged``
        (:func:`finite_run`). Returns the run id."""
        status, result, curves = finite_run(status, result, curves)
        with self._write():  # one transaction
            kept = self._readable_row(spec_hash, seed)
            self.db.execute("DELETE FROM claims WHERE spec_hash = ? AND seed = ?", (spec_hash, seed))
            if kept and kept["status"] in FINISHED:
                return kept["id"]
            self.db.execute("DELETE FROM runs WHERE spec_hash = ? AND seed = ?", (spec_hash, seed))
            cur = self.db.execute(
                "INSERT INTO runs (spec_hash, seed, status, spec, result, started_at, finished_at, versions, hardware)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (spec_hash, seed, status, json.dumps(spec, sort_keys=True), json.dumps(result, allow_nan=False),
                 started_at, now(), json.dumps(run_versions or versions()), json.dumps(run_hardware or hardware())))
            run_id = cur.lastrowid
            if any(c[3] is None for c in curves):
                self._nullable_metrics()
            self.db.executemany("INSERT INTO metrics (run_id, step, split, name, value) VALUES (?, ?, ?, ?, ?)",
                                [(run_id, *c) for c in curves])
            if artifact is not None:
                self.db.execute("INSERT INTO artifacts (run_id, data) VALUES (?, ?)", (run_id, artifact))
        if self.path in _WRITTEN:
            _WRITTEN[self.path] += 1
        return run_id

    def _nullable_metrics(self) -> None:
        """Let ``metrics.value`` hold NULL in a store made before it could (its column NOT
        NULL): the table is rebuilt, once, inside the caller's transaction, so a store is
        changed only when a non-finite value is first stored in it."""
        if not any(row[1] == "value" and row[3] for row in self.db.execute("PRAGMA table_info(metrics)")):
            return
        self.db.execute("CREATE TABLE metrics_nullable (run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
                        " step INTEGER NOT NULL, split TEXT NOT NULL, name TEXT NOT NULL, value REAL)")
        self.db.execute("INSERT INTO metrics_nullable SELECT run_id, step, split, name, value FROM metrics")
        self.db.execute("DROP TABLE metrics")
        self.db.execute("ALTER TABLE metrics_nullable RENAME TO metrics")
        self.db.execute("CREATE INDEX IF NOT EXISTS metrics_run ON metrics(run_id)")

    # -- claims: which command trains which run ---------------------------------------------
    def claim(self, spec_hash: str, seed: int, since: str | None = None) -> str:
        """Try to claim a run for this Store's owner. Returns ``"claimed"``; ``"done"`` when
        it needs no training here: finished, or stored (failed too) by another command at
        or after ``since`` (an ISO time: when this command began, so that a run another
        command just tried is not tried again at once); or ``"busy"``: another live command
        holds it. A stale claim (dead holder, lapsed lease) is taken over."""
        with self._write():
            d = self._readable_row(spec_hash, seed)
            if d and (d["status"] in FINISHED or (since is not None and d["finished_at"] >= since)):
                return "done"
            held = self.db.execute("SELECT owner, host, pid, expires FROM claims WHERE spec_hash = ? AND seed = ?",
                                   (spec_hash, seed)).fetchone()
            if held and held[0] != self.owner and not self._stale(*held[1:]):
                return "busy"
            self.db.execute("INSERT OR REPLACE INTO claims (spec_hash, seed, owner, host, pid, expires)"
                            " VALUES (?, ?, ?, ?, ?, ?)",
                            (spec_hash, seed, self.owner, HOST, os.getpid(), time.time() + LEASE_SECONDS))
        return "claimed"

    @staticmethod
    def _stale(host: str, pid: int, expires: float) -> bool:
        return expires < time.time() or (host == HOST and not _alive(pid))

    def release(self, spec_hash: str | None = None, seed: int | None = None) -> None:
        """Drop this owner's claim on one run, or (no arguments) on every run."""
        with self._write():
            if spec_hash is None:
                self.db.execute("DELETE FROM claims WHERE owner = ?", (self.owner,))
            else:
                self.db.execute("DELETE FROM claims WHERE owner = ? AND spec_hash = ? AND seed = ?",
                                (self.owner, spec_hash, seed))

    def lease(self) -> "Lease":
        """``with store.lease():`` renews this owner's claims while the block runs, and
        drops those left (runs not stored: interrupted) when it ends."""
        return Lease(self)

    def add_experiment(self, name: str, quick: bool, result: dict[str, Any], started_at: str) -> int:
        with self._write():
            cur = self.db.execute(
                "INSERT INTO experiments (name, quick, result, started_at, finished_at, versions, hardware)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name, int(quick), json.dumps(result), started_at, now(), json.dumps(versions()),
                 json.dumps(hardware())))
        return cur.lastrowid

    def experiments(self) -> list[dict[str, Any]]:
        """Every stored experiment result, oldest first."""
        cols = ["id", "name", "quick", "result", "started_at", "finished_at", "versions", "hardware"]
        try:
            rows = self.db.execute(f"SELECT {', '.join(cols)} FROM experiments ORDER BY id").fetchall()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"store: {self.path} is corrupt ({e})") from None
        out = []
        for r in rows:  # a row that does not decode is skipped, saying which
            d = dict(zip(cols, r))
            try:
                d.update({k: json.loads(d[k]) for k in ("result", "versions", "hardware")})
                if not isinstance(d["result"], dict):
                    raise ValueError("not a JSON object")
            except (TypeError, ValueError) as e:
                warnings.warn(StoreWarning(f"store: experiment {d['name']} (id {d['id']}) in {self.path} is corrupt: "
                                           f"its result is not valid JSON ({e}); skipped"), stacklevel=2)
                continue
            out.append(d)
        return out

    def set_meta(self, key: str, value: Any) -> None:
        with self._write():
            self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if not row:
            return default
        try:
            return json.loads(row[0])
        except (TypeError, ValueError) as e:
            warnings.warn(StoreWarning(f"store: meta {key!r} in {self.path} is not valid JSON ({e}); ignored"),
                          stacklevel=2)
            return default

    # -- reading ------------------------------------------------------------------------
    def runs(self) -> list[dict[str, Any]]:
        """Every stored run: its columns, with spec, result, versions and hardware decoded.
        A row that cannot be read (:meth:`_row_problem`) is skipped with a
        :class:`StoreWarning` naming its key; a file SQLite cannot read is a StoreError."""
        out = []
        try:
            rows = self.db.execute(f"SELECT {', '.join(ROW_COLUMNS)} FROM runs ORDER BY id").fetchall()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"store: {self.path} is corrupt ({e})") from None
        for row in rows:
            d = dict(zip(ROW_COLUMNS, row))
            problem = self._row_problem(d)
            if problem:
                warnings.warn(StoreWarning(f"store: run {d['spec_hash']} seed {d['seed']} (id {d['id']}) in "
                                           f"{self.path} is corrupt: {problem}; skipped"), stacklevel=2)
                continue
            out.append(d)
        return out

    @staticmethod
    def _row_problem(d: dict[str, Any]) -> str:
        """Decode a run's JSON columns in place; say what makes the row unreadable, or "".
        Readers rely on a spec naming its dataset and its model's ``MODEL_KEYS``, and on a complete run's result
        holding the metric it is judged by (:func:`skiplab.metrics.metric_of`): one without
        it would drop out of every mean unseen."""
        from .metrics import metric_of

        for k in ("spec", "result", "versions", "hardware"):
            try:
                d[k] = json.loads(d[k])
            except (TypeError, ValueError) as e:  # ValueError: JSONDecodeError, and bytes that are not UTF-8
                return f"its {k} is not valid JSON ({e})"
            if not isinstance(d[k], dict):
                return f"its {k} is not a JSON object"
        spec = d["spec"]
        model = spec.get("model")
        if not isinstance(model, dict) or not isinstance(spec.get("dataset"), str):
            return "its spec names no model or dataset"
        missing = [k for k in MODEL_KEYS if k not in model]
        if missing:
            return f"its spec's model has no {', '.join(missing)}"
        if d["status"] == "complete":
            key = metric_of(d).key
            if key not in d["result"]:
                return f"it is complete but its result has no {key}"
        return ""

    def artifact(self, spec_hash: str, seed: int) -> bytes | None:
        """The trained weights stored with a run (None if the run or its weights are not there)."""
        row = self.db.execute("SELECT a.data FROM artifacts a JOIN runs r ON r.id = a.run_id "
                              "WHERE r.spec_hash = ? AND r.seed = ?", (spec_hash, seed)).fetchone()
        return None if row is None else bytes(row[0])

    def metrics(self, run_id: int) -> list[tuple[int, str, str, float]]:
        """A run's curve points, (step, split, name, value); a value stored as NULL (it was
        not finite) is ``float('nan')``; a point whose value is not a number (a corrupt
        row) is skipped with a :class:`StoreWarning`."""
        out = []
        for step, split, name, value in self.db.execute(
                "SELECT step, split, name, value FROM metrics WHERE run_id = ? ORDER BY step, split, name", (run_id,)):
            if value is None:
                value = math.nan
            elif isinstance(value, int):
                value = float(value)
            elif not isinstance(value, float):
                warnings.warn(StoreWarning(f"store: run id {run_id} in {self.path}: its {split} {name} at step {step} "
                                           f"is not a number ({value!r}); skipped"), stacklevel=2)
                continue
            out.append((step, split, name, value))
        return out

    def export_csv(self, path: str | os.PathLike) -> int:
        """One row per run: key, status, the model's main fields and the results. Returns rows written."""
        runs = self.runs()
        fields = ["id", "spec_hash", "seed", "status", "group", "dataset", "model", "skip", "depth", "width",
                  "growth", "norm", "params", "test_accuracy", "train_accuracy", "test_loss", "train_loss",
                  "val_bpc", "train_bpc", "tokens_per_second", "steps", "seconds", "started_at", "finished_at"]
        try:
            with open(path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=fields)
                w.writeheader()
                for r in runs:
                    m, res = r["spec"]["model"], r["result"]
                    w.writerow({"id": r["id"], "spec_hash": r["spec_hash"], "seed": r["seed"], "status": r["status"],
                                "group": r["spec"].get("group", ""), "dataset": r["spec"]["dataset"],
                                **{k: m.get(k) for k in ("model", "skip", "depth", "width", "growth", "norm")},
                                **{k: res.get(k) for k in ("params", "test_accuracy", "train_accuracy", "test_loss",
                                                           "train_loss", "val_bpc", "train_bpc",
                                                           "tokens_per_second", "steps", "seconds")},
                                "started_at": r["started_at"], "finished_at": r["finished_at"]})
        except OSError as e:
            raise StoreError(f"export: cannot write {path}: {e.strerror}") from None
        return len(runs)


class _Immediate:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` on any exception (Ctrl-C too)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, *exc) -> None:
        self.db.execute("ROLLBACK" if kind else "COMMIT")


class Lease:
    """Renews the claims of one Store's owner every LEASE_RENEW seconds from a thread with
    its own connection (the owner's may be busy for minutes: a run trained in-process),
    and drops them when the block ends."""

    def __init__(self, store: Store):
        self.store, self._stop = store, threading.Event()
        self._thread = threading.Thread(target=self._renew, name="skiplab-lease", daemon=True)

    def _renew(self) -> None:
        db = sqlite3.connect(self.store.path, timeout=30)
        try:
            while not self._stop.wait(LEASE_RENEW):
                try:
                    with db:
                        db.execute("UPDATE claims SET expires = ? WHERE owner = ?",
                                   (time.time() + LEASE_SECONDS, self.store.owner))
                except sqlite3.Error:  # busy past the timeout: try again at the next renewal
                    pass
        finally:
            db.close()

    def __enter__(self) -> "Lease":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self.store.release()
        except sqlite3.Error:  # left behind, the claims are stale as soon as this process ends
            pass
