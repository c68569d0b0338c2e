"""The results store: one SQLite file (``DIR/runs.db``) of runs and their metrics.

* A run is keyed by ``(spec_hash, seed)``; a finished run (``complete`` or ``diverged``)
  is never run again, so re-running a study resumes it.
* A run's row and all its metrics are written in one transaction when it finishes: a
  study killed at any point (Ctrl-C, ``kill -9``) leaves every finished run whole and no
  half-written one. WAL mode lets readers (``skiplab runs list``) look while a study writes.
* Only one process writes (the study's parent); workers return results.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import sqlite3
from pathlib import Path
from typing import Any, Iterable

from .provenance import hardware, versions

FINISHED = ("complete", "diverged")

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
    value REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_run ON metrics(run_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
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


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class StoreError(ValueError):
    """The store is missing, unreadable or not a skiplab store."""


class Store:
    """``Store(DIR)`` opens (creating if needed) ``DIR/runs.db``."""

    def __init__(self, directory: str | os.PathLike, create: bool = True):
        self.dir = Path(directory)
        self.path = self.dir / "runs.db"
        if not create and not self.path.is_file():
            raise StoreError(f"store: no results store at {self.path} (run `skiplab study --out {self.dir}` first)")
        try:
            if create:
                self.dir.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.executescript(SCHEMA)
            self.db.execute("SELECT count(*) FROM runs").fetchone()
        except (sqlite3.DatabaseError, OSError) as e:
            raise StoreError(f"store: {self.path} is not a usable results store ({e})") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writing ------------------------------------------------------------------------
    def finished_keys(self) -> set[tuple[str, int]]:
        rows = self.db.execute(f"SELECT spec_hash, seed FROM runs WHERE status IN {FINISHED}")
        return {(h, s) for h, s in rows}

    def add_run(self, spec: dict[str, Any], spec_hash: str, seed: int, status: str, result: dict[str, Any],
                curves: Iterable[tuple[int, str, str, float]], started_at: str,
                run_versions: dict | None = None, run_hardware: dict | None = None) -> int:
        """Store a finished run and its metrics atomically; a previous row with the same
        key (a failed attempt) is replaced. Returns the run id."""
        with self.db:  # one transaction
            self.db.execute("DELETE FROM runs WHERE spec_hash = ? AND seed = ?", (spec_hash, seed))
            cur = self.db.execute(
                "INSERT INTO runs (spec_hash, seed, status, spec, result, started_at, finished_at, versions, hardware)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (spec_hash, seed, status, json.dumps(spec, sort_keys=True), json.dumps(result), started_at, now(),
                 json.dumps(run_versions or versions()), json.dumps(run_hardware or hardware())))
            run_id = cur.lastrowid
            self.db.executemany("INSERT INTO metrics (run_id, step, split, name, value) VALUES (?, ?, ?, ?, ?)",
                                [(run_id, *c) for c in curves])
        return run_id

    def add_experiment(self, name: str, quick: bool, result: dict[str, Any], started_at: str) -> int:
        with self.db:
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
            return [{**dict(zip(cols, r)), **{k: json.loads(v) for k, v in zip(cols, r)
                                               if k in ("result", "versions", "hardware")}} for r in rows]
        except (sqlite3.DatabaseError, json.JSONDecodeError) as e:
            raise StoreError(f"store: {self.path} is corrupt ({e})") from None

    def set_meta(self, key: str, value: Any) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    # -- reading ------------------------------------------------------------------------
    def runs(self) -> list[dict[str, Any]]:
        """Every stored run: its columns, with spec, result, versions and hardware decoded."""
        cols = ["id", "spec_hash", "seed", "status", "spec", "result", "started_at", "finished_at", "versions",
                "hardware"]
        out = []
        try:
            rows = self.db.execute(f"SELECT {', '.join(cols)} FROM runs ORDER BY id").fetchall()
            for row in rows:
                d = dict(zip(cols, row))
                for k in ("spec", "result", "versions", "hardware"):
                    d[k] = json.loads(d[k])
                out.append(d)
        except (sqlite3.DatabaseError, json.JSONDecodeError) as e:
            raise StoreError(f"store: {self.path} is corrupt ({e})") from None
        return out

    def metrics(self, run_id: int) -> list[tuple[int, str, str, float]]:
        return self.db.execute("SELECT step, split, name, value FROM metrics WHERE run_id = ? ORDER BY step, split, name",
                               (run_id,)).fetchall()

    def export_csv(self, path: str | os.PathLike) -> int:
        """One row per run: key, status, the model's main fields and the results. Returns rows written."""
        runs = self.runs()
        fields = ["id", "spec_hash", "seed", "status", "group", "dataset", "model", "skip", "depth", "width",
                  "growth", "norm", "params", "test_accuracy", "train_accuracy", "test_loss", "train_loss",
                  "steps", "seconds", "started_at", "finished_at"]
        try:
            with open(path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=fields)
                w.writeheader()
                for r in runs:
                    m, res = r["spec"]["model"], r["result"]
                    w.writerow({"id": r["id"], "spec_hash": r["spec_hash"], "seed": r["seed"], "status": r["status"],
                                "group": r["spec"].get("group", ""), "dataset": r["spec"]["dataset"],
                                **{k: m[k] for k in ("model", "skip", "depth", "width", "growth", "norm")},
                                **{k: res.get(k) for k in ("params", "test_accuracy", "train_accuracy", "test_loss",
                                                           "train_loss", "steps", "seconds")},
                                "started_at": r["started_at"], "finished_at": r["finished_at"]})
        except OSError as e:
            raise StoreError(f"export: cannot write {path}: {e.strerror}") from None
        return len(runs)
