"""Where an export writes, checked before any export starts (``skiplab runs export``):
a target that cannot be written is one line, with nothing created and nothing overwritten.

Each check only looks: it creates no folder, opens no file for writing and imports no
optional library (MLflow takes seconds to import, and once took 110 s to fail on a folder
given as a database). Only the last folder of a path is ever created, so a typo in a
parent folder is refused rather than made.

MLflow targets: ``sqlite:///FILE.db`` (a new file, an empty one or an MLflow database, in an
existing folder), a ``file:`` URI (MLflow's old file store, passed on), or a folder path
(it gets ``FOLDER/mlflow.db``). A bare word (``databricks``, ``mlruns``) is a folder only if
that folder exists: MLflow reads such words as tracking servers, so making a folder of one
would hide the mistake; ``./mlruns`` makes a new folder here. Nothing networked
(``http:``, ``databricks:``, ...) is written to.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from ..errors import UserError

SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database (sqlite.org/fileformat.html)
MLFLOW_TABLES = ("alembic_version", "experiments")  # in every MLflow database, from its first migration
ACCEPTED = "sqlite:///FILE.db, a file: URI, or a folder"


class TargetError(UserError):
    """An export target that cannot be written; the message names the flag and the path."""


def _parent_folder(flag: str, path: Path, shown: str) -> None:
    """``path``'s folder must exist: only the last part of a path is created."""
    parent = path.parent
    if not parent.exists():
        raise TargetError(f"export: {flag} {shown}: the folder {parent} does not exist; create it first")
    if not parent.is_dir():
        raise TargetError(f"export: {flag} {shown}: {parent} is a file, not a folder")


def check_folder(flag: str, folder: str | os.PathLike) -> Path:
    """A folder an export writes into: an existing folder, or a new one in an existing folder."""
    path = Path(folder)
    if path.exists():
        if not path.is_dir():
            raise TargetError(f"export: {flag} {folder}: is a file, not a folder")
        return path
    _parent_folder(flag, path, str(folder))
    return path


def check_file(flag: str, file: str | os.PathLike, keep: tuple[Path, ...] = ()) -> Path:
    """A file an export writes (replacing it): not a folder, in an existing folder, and not
    one of ``keep`` (the results store itself)."""
    path = Path(file)
    if path.is_dir():
        raise TargetError(f"export: {flag} {file}: is a folder; give a file name in it")
    _parent_folder(flag, path, str(file))
    for kept in keep:
        if path.exists() and kept.exists() and os.path.samefile(path, kept):
            raise TargetError(f"export: {flag} {file}: is the results store itself; give another file")
    return path


def _check_database(shown: str, db: Path) -> None:
    """``db`` (``shown``: as the user wrote it) is absent (MLflow creates it), empty, or an
    SQLite database holding MLflow's tables; anything else (a text file, a folder,
    skiplab's own runs.db) would be overwritten or mixed with MLflow's tables, so it is
    refused before MLflow is imported."""
    if db.is_dir():
        raise TargetError(f"export: --mlflow {shown!r}: {db} is a folder, not a database file; "
                          f"give the folder itself or sqlite:///{db / 'mlflow.db'}")
    if not db.exists():
        _parent_folder("--mlflow", db, repr(shown))
        return
    try:
        with open(db, "rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except OSError as e:
        raise TargetError(f"export: --mlflow {shown!r}: cannot read {db}: {e.strerror or e}") from None
    if not head:
        return  # an empty file is an empty SQLite database
    if head != SQLITE_HEADER:
        raise TargetError(f"export: --mlflow {shown!r}: {db} is not an SQLite database; give a new file name")
    try:
        # immutable: reading a database in WAL mode must not leave -wal and -shm files beside it
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        raise TargetError(f"export: --mlflow {shown!r}: {db} is not a readable SQLite database ({e})") from None
    if tables and not all(t in tables for t in MLFLOW_TABLES):
        raise TargetError(f"export: --mlflow {shown!r}: {db} is an SQLite database but not MLflow's (its tables: "
                          f"{', '.join(sorted(tables)[:4])}{', ...' if len(tables) > 4 else ''}); give a new file name")


@dataclass(frozen=True)
class MlflowTarget:
    """Where an MLflow export goes: the tracking URI handed to MLflow, the folder for
    artifacts (None: MLflow's own choice, for a ``file:`` store), and the folder to create
    first (None: it exists)."""

    tracking_uri: str
    artifacts: Path | None
    create: Path | None = None


def mlflow_target(uri: str) -> MlflowTarget:
    """The MLflow store ``uri`` names (see the module docstring), checked; creates nothing."""
    scheme = urlparse(uri).scheme
    if scheme == "sqlite":
        db = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None
        if db is None or not db.name:
            raise TargetError(f"export: --mlflow {uri!r}: write a database as sqlite:///PATH/TO/FILE.db")
        _check_database(uri, db)
        return MlflowTarget(uri, db.parent / "mlartifacts")
    if scheme == "file":
        folder = Path(unquote(urlparse(uri).path))
        if folder.exists() and not folder.is_dir():
            raise TargetError(f"export: --mlflow {uri!r}: {folder} is a file, not a folder")
        if not folder.exists():
            _parent_folder("--mlflow", folder, repr(uri))
        return MlflowTarget(uri, None)
    if scheme and len(scheme) > 1:  # (a one-letter scheme is a Windows drive)
        raise TargetError(f"export: --mlflow {uri!r}: only a local store is written: {ACCEPTED}")
    folder = Path(uri)
    if not folder.is_dir():
        if folder.exists():
            raise TargetError(f"export: --mlflow {uri!r}: is a file, not a folder; a database file is written "
                             f"sqlite:///{uri}")
        if os.sep not in uri and "/" not in uri and not (os.altsep and os.altsep in uri):
            raise TargetError(f"export: --mlflow {uri!r}: no folder of that name here, and not a URI; give {ACCEPTED} "
                              f"(./{uri} makes a new folder)")
        _parent_folder("--mlflow", folder, repr(uri))
    else:
        _check_database(uri, folder / "mlflow.db")
    return MlflowTarget(f"sqlite:///{(folder / 'mlflow.db').resolve()}", folder / "mlartifacts",
                        None if folder.is_dir() else folder)


def experiment_name(name: str | None) -> str | None:
    """An MLflow experiment's name as given (None: the default); a blank one is refused,
    not replaced by the default."""
    if name is not None and not name.strip():
        raise TargetError(f"export: --experiment: an experiment needs a name, got {name!r}")
    return name


def check_targets(out: str | os.PathLike, csv: str | None = None, tensorboard: str | None = None,
                  mlflow: str | None = None, experiment: str | None = None) -> None:
    """Every target of one export, checked before the first is written (so that a bad
    ``--mlflow`` does not leave a CSV file behind)."""
    if csv is not None:
        check_file("--csv", csv, keep=(Path(out) / "runs.db",))
    if tensorboard is not None:
        check_folder("--tensorboard", tensorboard)
    experiment_name(experiment)
    if mlflow is not None:
        mlflow_target(mlflow)
