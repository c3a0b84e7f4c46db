"""The search run (``quantkit tune``): the pipeline's stages around an accuracy-tolerance search.

load data → export (into a state folder beside the output, so a rerun resumes) → search the space with the
spec's strategy (trials quantized by :class:`~quantkit.search.runner.OnnxTrialRunner`, recorded in the trial
store) → quantize the chosen candidate → :func:`quantkit.pipeline.finish`. When nothing is within tolerance
the closest candidate is finished into ``<output>-closest-not-within-tolerance`` and
:class:`~quantkit.errors.ToleranceNotMetError` says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from .._version import __version__
from ..backends import QuantizedModel
from ..errors import QuantizationError, ToleranceNotMetError
from ..executors import make_executor
from ..export import export_onnx
from ..graph import graph_summary
from ..latency import default_threads
from ..models import LoadedModel
from ..pipeline import Job, finish, load_data, optimize
from ..result import QuantizationResult
from ..spec import QuantizationSpec
from .report import describe_config, plot_tuning, tuning_summary
from .runner import OnnxTrialRunner
from .space import SearchPoint, expand_space
from .store import TrialStore
from .strategies import SearchContext, run_search
from .tolerance import Tolerance

logger = logging.getLogger(__name__)

__all__ = ["run_tune", "run_key"]


def run_key(spec: QuantizationSpec, loaded: LoadedModel) -> str:
    """Fingerprint of everything a trial's numbers depend on, besides its own config."""
    files: dict[str, Any] = {}
    src = Path(loaded.name_or_path)
    if src.is_dir():
        for f in sorted(src.iterdir()):
            if f.is_file():
                st = f.stat()
                files[f.name] = [st.st_size, int(st.st_mtime)]
    for key in ("calibration", "evaluation"):
        ds = getattr(spec.data, key)
        if ds is not None and Path(ds.path).is_file():
            st = Path(ds.path).stat()
            files[f"data.{key}"] = [st.st_size, int(st.st_mtime)]
    tuning = spec.tuning
    payload = {
        "quantkit": __version__,
        "model": [loaded.name_or_path, loaded.revision, loaded.task],
        "files": files,
        "data": spec.data.model_dump(mode="json"),
        "export": spec.export.model_dump(mode="json"),
        # where the work runs (executors, shards) never changes a trial's numbers: not in the key
        "evaluation": spec.evaluation.model_dump(mode="json", exclude={"executor", "shards"}),
        "latency": tuning.latency.model_dump(mode="json") if tuning and tuning.latency else None,
        "threads": default_threads(),
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _trial_logger(base: dict[str, Any], on_trial: Any | None) -> Any:
    def report_trial(trial: Any, ctx: Any) -> None:
        logger.info(
            "trial %d [%s] %s: %s metric=%s p50=%s%s", trial.idx, trial.origin, describe_config(trial.config, base),
            trial.status, f"{trial.metric:.4f}" if trial.metric is not None else "-",
            f"{trial.latency_ms:.1f}ms" if trial.latency_ms is not None else "-",
            " PASS" if trial.passed else "",
        )
        if on_trial is not None:
            on_trial(trial, ctx)

    return report_trial


def _search(job: Job, runner: OnnxTrialRunner, tolerance: Tolerance, state: Path, on_trial: Any | None) -> Any:
    """Expand the space and run the strategy; the outcome and the search summary for the report."""
    spec = job.spec
    tuning = spec.tuning
    assert tuning is not None
    base = spec.quantization.model_dump(mode="json")
    candidates = expand_space(spec.quantization, tuning.space, optimize=spec.export.optimize)
    logger.info("search space: %d candidate(s); strategy %s, objective %s", len(candidates),
                tuning.strategy, tuning.objective)
    with make_executor(tuning.executor) as executor, TrialStore(state / "trials.db") as store:
        ctx = SearchContext(
            runner, tolerance, store, run_key(spec, job.run.loaded), objective=tuning.objective,
            max_trials=tuning.max_trials, timeout=tuning.timeout, prune=tuning.prune,
            on_trial=_trial_logger(base, on_trial), executor=executor,
        )
        outcome = run_search(
            tuning.strategy, ctx, candidates,
            max_nodes=tuning.fallback.max_nodes, fallback_candidates=tuning.fallback.candidates,
        )
        described = executor.describe()
    summary = tuning_summary(outcome, tolerance, tuning.strategy, tuning.objective, base)
    summary["executor"] = described
    summary["space_size"] = len(candidates)
    summary["latency_decision"] = outcome.latency_decision
    return outcome, summary


def run_tune(job: Job, on_trial: Any | None = None) -> QuantizationResult:
    """Search the spec's ``tuning.space`` and finish the best candidate within tolerance (or raise
    :class:`ToleranceNotMetError` after finishing the closest one)."""
    spec, run, target = job.spec, job.run, job.target
    tuning = spec.tuning
    assert tuning is not None
    job.mark()
    evaluation, calibration = load_data(run)
    job.lap("data_s")
    state = target.parent / f".{target.name}.quantkit-tuning"
    state.mkdir(parents=True, exist_ok=True)
    job.mark()
    fp32 = export_onnx(run.loaded, state / "fp32", spec.export)
    job.lap("export_s")
    runner = OnnxTrialRunner(
        spec, fp32, evaluation, calibration, state, vocab_size=run.vocab_size, progress=job.progress,
        loaded=run.loaded, optimizer=lambda level, config: optimize(run, fp32, state, level, config),
        task=run.task,
    )
    tolerance = Tolerance.from_spec(tuning.tolerance, spec.evaluation.higher_is_better)
    outcome, summary = _search(job, runner, tolerance, state, on_trial)
    job.lap("search_s")
    picked = outcome.chosen or outcome.closest
    if picked is None:
        errors = "; ".join(sorted({tr.error or tr.status for tr in outcome.trials}))[:800]
        raise QuantizationError(f"no trial produced a usable model ({len(outcome.trials)} tried): {errors}")
    config = SearchPoint.model_validate(picked.config)
    job.mark()
    path = runner.quantize(config)
    quantized = QuantizedModel(path=path, backend=config.backend, config=config, summary=graph_summary(path))
    plot = plot_tuning(summary, spec.evaluation.metric, state / "tuning.png")
    extra = {"tuning.png": plot, "trials.db": state / "trials.db"}
    if outcome.chosen is None:
        closest_dir = target.parent / f"{target.name}-closest-not-within-tolerance"
        finish(job, fp32, quantized, evaluation, target=closest_dir, overwrite=True, tuning=summary,
               extra_files=extra)
        gap = (picked.loss or 0.0) - tolerance.value
        raise ToleranceNotMetError(
            f"none of {len(outcome.trials)} trial(s) reached {tolerance.describe(outcome.baseline.metric)}; "
            f"closest: trial {picked.idx} ({describe_config(picked.config)}) with "
            f"{spec.evaluation.metric} {picked.metric:.4f}, {gap:.4g} beyond the tolerance. "
            f"It was saved in {closest_dir}",
            closest_dir=str(closest_dir),
            gap=gap,
            hint="widen tuning.space, raise tuning.max_trials or tuning.fallback.max_nodes, or relax "
            "tuning.tolerance; rerunning resumes from the trials already done",
        )
    result = finish(job, fp32, quantized, evaluation, tuning=summary, extra_files=extra)
    shutil.rmtree(state / "trials", ignore_errors=True)  # trial models; trials.db stays for resume
    return result
