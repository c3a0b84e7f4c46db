"""Stage 1 (files): state a previous run left beside the output folder is readable (the tuning trial database)."""

from __future__ import annotations

from pathlib import Path

from ..search.store import check_trial_db, trial_db_path
from .base import CheckContext, Problem, check, error

__all__ = ["check_trials_db"]


@check("files.trials", stage="files")
def check_trials_db(ctx: CheckContext) -> list[Problem]:
    """A tuning run's trial database (kept beside the output folder to resume) is readable SQLite."""
    target = ctx.output_dir or (Path(ctx.spec.output.dir) if ctx.spec.output.dir else None)
    if not ctx.tune or target is None:
        return []
    path = trial_db_path(target)
    why = check_trial_db(path)
    if why is None:
        return []
    return [error("tuning", f"the trial database of a previous run, {path}, cannot be read ({why})",
                  "rerun with --reset-trials to move it aside to a timestamped backup and start a new one with the "
                  "trials that can still be read")]
