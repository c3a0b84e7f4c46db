"""SQLite trial store: every finished trial is committed as it finishes, so a killed
search loses nothing and a rerun of the same command skips what is done.

A trial's key is the hash of its config *and* of the run fingerprint (model, data,
export and evaluation settings), so a changed model or dataset never reuses stale
results.

A database that cannot be read (corrupted, truncated, not SQLite) is a
:class:`~quantkit.errors.TrialStoreError` naming the file, never a silent fresh start that would
lose trials; :func:`reset_trial_store` (``quantkit tune --reset-trials``) moves it aside to a
timestamped backup and starts a new one holding every row that could still be read.
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TrialStoreError

logger = logging.getLogger(__name__)

__all__ = ["Trial", "TrialStore", "trial_db_path", "check_trial_db", "reset_trial_store"]

#: Tuning state beside the output folder (the convention of ``Quantizer._tune``).
STATE_DIR = ".{name}.quantkit-tuning"
DB_FILE = "trials.db"
_RESET_HINT = ("rerun with --reset-trials to move it aside to a timestamped backup and start a new one "
               "(the rows that can still be read are copied over), or delete it to start from scratch")


def trial_db_path(output_dir: str | Path) -> Path:
    """Where ``quantkit tune`` keeps the trials of the run writing ``output_dir``."""
    target = Path(output_dir).expanduser().resolve()
    return target.parent / STATE_DIR.format(name=target.name) / DB_FILE


def _open(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), timeout=30)
    try:
        row = db.execute("PRAGMA quick_check").fetchone()
        if row is None or row[0] != "ok":
            raise sqlite3.DatabaseError(f"integrity check: {row[0] if row else 'no answer'}")
    except BaseException:
        db.close()
        raise
    return db


def check_trial_db(path: str | Path) -> str | None:
    """None when ``path`` is missing or a readable SQLite database, else what is wrong (read-only)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            row = db.execute("PRAGMA quick_check").fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        return str(exc)
    return None if row and row[0] == "ok" else f"integrity check: {row[0] if row else 'no answer'}"


def reset_trial_store(path: str | Path) -> Path | None:
    """Move the trial database at ``path`` (and its -wal/-shm files) to ``<path>.corrupt-<timestamp>``
    and start a new one with every trial and baseline row that can still be read from the old one.

    Returns the backup's path (None when there was no database).
    """
    path = Path(path)
    if not path.exists():
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(path) + suffix)
        if src.exists():
            shutil.move(str(src), str(backup) + suffix)
    rows = _salvage(backup)
    with TrialStore(path) as store, store._db:
        for table, values in rows.items():
            for row in values:
                marks = ", ".join("?" * len(row))
                names = f" ({', '.join(_TRIAL_COLUMNS[:len(row)])})" if table == "trials" else ""
                store._db.execute(f"INSERT OR REPLACE INTO {table}{names} VALUES ({marks})", row)
    logger.warning("trial database %s moved to %s; %d trial(s) recovered into a new one", path, backup,
                   len(rows.get("trials", [])))
    return backup


def _salvage(path: Path) -> dict[str, list[tuple]]:
    """The rows of ``trials`` and ``baselines`` that can be read from a damaged database (best effort)."""
    out: dict[str, list[tuple]] = {"trials": [], "baselines": []}
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return out
    try:
        for table, ncols in (("trials", (17, len(_TRIAL_COLUMNS))), ("baselines", (2,))):
            try:
                cur = db.execute(f"SELECT * FROM {table}")
                while True:
                    try:
                        row = cur.fetchone()
                    except sqlite3.Error:
                        break
                    if row is None:
                        break
                    if len(row) in ncols:
                        out[table].append(tuple(row))
            except sqlite3.Error:
                continue
    finally:
        db.close()
    return out

#: The trials table's columns in order (``hardware`` came later: older databases get it added on open).
_TRIAL_COLUMNS = ("key", "run", "idx", "origin", "config_hash", "config", "status", "metric", "latency_ms", "size_bytes",
                  "passed", "loss", "error", "note", "model_path", "started", "duration_s", "hardware")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS trials (
    key TEXT PRIMARY KEY,
    run TEXT NOT NULL,
    idx INTEGER NOT NULL,
    origin TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL,
    metric REAL,
    latency_ms REAL,
    size_bytes INTEGER,
    passed INTEGER NOT NULL DEFAULT 0,
    loss REAL,
    error TEXT,
    note TEXT,
    model_path TEXT,
    started REAL,
    duration_s REAL,
    hardware TEXT
);
CREATE TABLE IF NOT EXISTS baselines (
    run TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
"""


@dataclass
class Trial:
    """One quantize-and-evaluate attempt."""

    idx: int
    origin: str  # "space", "fallback", ...
    config_hash: str
    config: dict[str, Any]
    status: str  # "ok" | "failed" | "pruned"
    metric: float | None = None
    latency_ms: float | None = None
    size_bytes: int | None = None
    passed: bool = False
    loss: float | None = None
    error: str | None = None
    note: str | None = None
    model_path: str | None = None
    started: float = field(default_factory=time.time)
    duration_s: float = 0.0
    #: Where it ran: ``{"scored_on": cpu, "timed_on": cpu}`` (CPU model, ISA flags, host; see quantkit.executors).
    hardware: dict[str, Any] | None = None
    cached: bool = False  # loaded from the store rather than run now

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("cached")
        return data


class TrialStore:
    """Trials of one or more runs in one SQLite file (WAL, committed per trial)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = _open(self.path)
        except sqlite3.Error as exc:
            raise TrialStoreError(f"trial database {self.path} cannot be read ({exc}); its trials are kept "
                                  "as they are", hint=_RESET_HINT) from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(trials)")}
            if "hardware" not in columns:  # a database written before trials recorded their CPU
                self._db.execute("ALTER TABLE trials ADD COLUMN hardware TEXT")
            self._db.commit()
        except sqlite3.Error as exc:
            self._db.close()
            raise TrialStoreError(f"trial database {self.path} cannot be used ({exc})", hint=_RESET_HINT) from None

    @staticmethod
    def key(run: str, config_hash: str, origin_detail: str = "") -> str:
        return f"{run}:{config_hash}{':' + origin_detail if origin_detail else ''}"

    def get(self, run: str, config_hash: str) -> Trial | None:
        row = self._db.execute(
            "SELECT idx, origin, config_hash, config, status, metric, latency_ms, size_bytes, passed, loss, error, "
            "note, model_path, started, duration_s, hardware FROM trials WHERE run = ? AND config_hash = ?",
            (run, config_hash),
        ).fetchone()
        if row is None:
            return None
        trial = Trial(
            idx=row[0], origin=row[1], config_hash=row[2], config=json.loads(row[3]), status=row[4], metric=row[5],
            latency_ms=row[6], size_bytes=row[7], passed=bool(row[8]), loss=row[9], error=row[10], note=row[11],
            model_path=row[12], started=row[13], duration_s=row[14], hardware=json.loads(row[15]) if row[15] else None,
        )
        trial.cached = True
        return trial

    def put(self, run: str, trial: Trial) -> None:
        with self._db:  # one transaction per trial: durable once this returns
            self._db.execute(
                "INSERT OR REPLACE INTO trials (key, run, idx, origin, config_hash, config, status, metric, "
                "latency_ms, size_bytes, passed, loss, error, note, model_path, started, duration_s, hardware) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    self.key(run, trial.config_hash), run, trial.idx, trial.origin, trial.config_hash,
                    json.dumps(trial.config, sort_keys=True), trial.status, trial.metric, trial.latency_ms,
                    trial.size_bytes, int(trial.passed), trial.loss, trial.error, trial.note, trial.model_path,
                    trial.started, trial.duration_s,
                    json.dumps(trial.hardware, sort_keys=True) if trial.hardware else None,
                ),
            )

    def trials(self, run: str) -> list[Trial]:
        hashes = [r[0] for r in self._db.execute("SELECT config_hash FROM trials WHERE run = ? ORDER BY idx", (run,))]
        return [t for h in hashes if (t := self.get(run, h)) is not None]

    def get_baseline(self, run: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT data FROM baselines WHERE run = ?", (run,)).fetchone()
        return json.loads(row[0]) if row else None

    def put_baseline(self, run: str, data: dict[str, Any]) -> None:
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO baselines (run, data) VALUES (?, ?)", (run, json.dumps(data)))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "TrialStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
