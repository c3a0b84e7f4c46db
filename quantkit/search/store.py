"""SQLite trial store: every finished trial is committed as it finishes, so a killed
search loses nothing and a rerun of the same command skips what is done.

A trial's key is the hash of its config *and* of the run fingerprint (model, data,
export and evaluation settings), so a changed model or dataset never reuses stale
results.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Trial", "TrialStore"]

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
    duration_s REAL
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
        self._db = sqlite3.connect(str(self.path), timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._db.commit()

    @staticmethod
    def key(run: str, config_hash: str, origin_detail: str = "") -> str:
        return f"{run}:{config_hash}{':' + origin_detail if origin_detail else ''}"

    def get(self, run: str, config_hash: str) -> Trial | None:
        row = self._db.execute(
            "SELECT idx, origin, config_hash, config, status, metric, latency_ms, size_bytes, passed, loss, error, "
            "note, model_path, started, duration_s FROM trials WHERE run = ? AND config_hash = ?",
            (run, config_hash),
        ).fetchone()
        if row is None:
            return None
        trial = Trial(
            idx=row[0], origin=row[1], config_hash=row[2], config=json.loads(row[3]), status=row[4], metric=row[5],
            latency_ms=row[6], size_bytes=row[7], passed=bool(row[8]), loss=row[9], error=row[10], note=row[11],
            model_path=row[12], started=row[13], duration_s=row[14],
        )
        trial.cached = True
        return trial

    def put(self, run: str, trial: Trial) -> None:
        with self._db:  # one transaction per trial: durable once this returns
            self._db.execute(
                "INSERT OR REPLACE INTO trials (key, run, idx, origin, config_hash, config, status, metric, "
                "latency_ms, size_bytes, passed, loss, error, note, model_path, started, duration_s) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    self.key(run, trial.config_hash), run, trial.idx, trial.origin, trial.config_hash,
                    json.dumps(trial.config, sort_keys=True), trial.status, trial.metric, trial.latency_ms,
                    trial.size_bytes, int(trial.passed), trial.loss, trial.error, trial.note, trial.model_path,
                    trial.started, trial.duration_s,
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
