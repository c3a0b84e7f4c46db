"""The run, top to bottom: the stages of ``quantize`` as functions of a resolved :class:`~quantkit.resolve.Run`.

prepare (spec → pre-flight → output folder → :class:`Job`) → load data → export → probe → optimize →
quantize → finish (evaluate FP32 and int8, time them side by side, the shape grid, the report, the artifact
folder). :func:`run_quantize` chains them; :mod:`quantkit.search.tune` reuses the same stages around its search.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .artifacts import check_output_dir, write_artifacts
from .checks import run_checks
from .backends import ProgressFactory, QuantizedModel, backend_class, get_backend
from .data import TextDataset, load_text_dataset
from .errors import SpecError, SpecIssue
from .evaluation import evaluate_model
from .executors import use_executor
from .export import ExportedModel, export_onnx
from .fusion import optimize_graph, resolve_level
from .hardware import detect_target, hardware_profile
from .latency import Rounds, Timer, add_timing, side_by_side
from .models import LoadedModel
from .probe import ProbeResult, probe_fusion
from .report import build_report
from .resolve import Run, calibration_used, resolve_run
from .result import QuantizationResult
from .shapes import check_shapes
from .spec import QuantizationConfig, QuantizationSpec
from .specio import load_spec, with_overrides

logger = logging.getLogger(__name__)
#: One line per stage of a run (and per timing round, from :mod:`quantkit.latency`): the CLI prints them unless
#: --no-progress, TTY or not; library users see them when they configure logging.
progress_log = logging.getLogger("quantkit.progress")

#: A FP32 metric within this of the chance level is "at chance".
CHANCE_MARGIN = 0.01

__all__ = ["Job", "prepare", "load_data", "optimize", "probe_defaults", "quantize_model", "finish", "run_quantize",
           "shard_executor", "progress_factory"]


def _tqdm_progress(total: int, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="ex", leave=False, dynamic_ncols=True)


def progress_factory(progress: bool | ProgressFactory) -> ProgressFactory | None:
    """``True``: tqdm bars; ``False``: none; a callable: used as is."""
    if progress is True:
        return _tqdm_progress
    if progress is False:
        return None
    return progress


@dataclass
class Job:
    """One run in flight: the resolved :class:`Run`, where it writes, how it shows progress and times models,
    and what it measured on the way (stage durations, the hardware probe's verdict)."""

    run: Run
    target: Path
    overwrite: bool
    progress: ProgressFactory | None = None
    #: What times models side by side (None: fresh processes, :class:`quantkit.latency.SubprocessTimer`).
    timer: Timer | None = None
    timings: dict[str, float] = field(default_factory=dict)
    probe: ProbeResult | None = None
    #: The models the hardware probe built, by level: (optimized FP32, its optimization section, int8 model).
    probe_builds: dict[str, tuple[ExportedModel, dict[str, Any], QuantizedModel]] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    _last: float = field(default_factory=time.perf_counter, repr=False)

    @property
    def spec(self) -> QuantizationSpec:
        return self.run.spec

    def mark(self) -> None:
        """Start timing the next stage now."""
        self._last = time.perf_counter()

    def stage(self, what: str) -> None:
        """Say which stage starts, with the time since the run started (one line, ``quantkit.progress``)."""
        progress_log.info("[%4.0fs] %s", time.perf_counter() - self.started, what)

    def lap(self, name: str) -> None:
        """Record ``timings[name]``: seconds since the last lap or mark."""
        now = time.perf_counter()
        self.timings[name] = round(now - self._last, 3)
        self._last = now


# --------------------------------------------------------------------------- prepare
def preflight(spec: QuantizationSpec, loaded: LoadedModel, spec_file: str | None, target: Path, overwrite: bool,
              tune: bool) -> None:
    """The pre-flight checks with the loaded model: warnings are logged, errors raise PreflightError."""
    report = run_checks(spec, loaded, output_dir=target, overwrite=overwrite, tune=tune, spec_file=spec_file)
    for problem in report.warnings:
        logger.warning("pre-flight: %s", problem)
    for estimate in report.estimates:
        logger.info("pre-flight estimate: %s: %s", estimate.name, estimate.summary)
    report.raise_for_errors()


def prepare(
    loaded: LoadedModel,
    spec: QuantizationSpec | str | Path,
    output_dir: str | Path | None,
    *,
    overwrite: bool | None,
    progress: bool | ProgressFactory,
    check: bool = True,
    tune: bool = False,
    timer: Timer | None = None,
) -> Job:
    """Load the spec, run the pre-flight, claim the output folder and resolve the run."""
    spec_file = None
    if not isinstance(spec, QuantizationSpec):
        spec_file = Path(spec).name
        spec = load_spec(spec)
    if spec.model.name_or_path and spec.model.name_or_path != loaded.name_or_path:
        logger.info("using the loaded model %s (spec names %s)", loaded.name_or_path, spec.model.name_or_path)
    target = output_dir if output_dir is not None else spec.output.dir
    if target is None:
        raise SpecError([SpecIssue(None, "output.dir", "required: set it in the spec or pass --output")])
    overwrite = spec.output.overwrite if overwrite is None else overwrite
    if check:
        preflight(spec, loaded, spec_file, Path(target), overwrite, tune or spec.tuning is not None)
    target = check_output_dir(target, overwrite)
    if tune and spec.tuning is None:  # `quantkit tune` of a spec without a tuning section: the defaults
        spec = with_overrides(spec, tuning={})
    return Job(run=resolve_run(spec, loaded), target=target, overwrite=overwrite,
               progress=progress_factory(progress), timer=timer)


@contextmanager
def shard_executor(spec: QuantizationSpec) -> Iterator[None]:
    """With ``evaluation.shards``: its executor, opened once for the whole run."""
    if (spec.evaluation.shards or 1) <= 1:
        yield
        return
    with use_executor(spec.evaluation.executor):
        yield


# --------------------------------------------------------------------------- stages
def load_data(run: Run) -> tuple[TextDataset, TextDataset | None]:
    """The evaluation data, and the calibration data when a run of this spec reads it."""
    spec = run.spec
    common = dict(max_length=spec.data.max_length, padding=spec.data.padding)
    tok, task = run.loaded.tokenizer, run.task
    evaluation = load_text_dataset(spec.data.evaluation, tok, task, key="data.evaluation", **common)
    calibration = None
    if calibration_used(spec):
        assert spec.data.calibration is not None  # calibration_used says so
        calibration = load_text_dataset(spec.data.calibration, tok, task, key="data.calibration", **common)
    return evaluation, calibration


def optimize(run: Run, fp32: ExportedModel, workdir: Path, level: str | None = None,
             config: QuantizationConfig | None = None) -> tuple[ExportedModel, dict[str, Any]]:
    """The FP32 graph the backend quantizes: ``export.optimize`` (or ``level``) applied and checked."""
    spec, loaded = run.spec, run.loaded
    config = config or spec.quantization
    requested = level or spec.export.optimize
    resolved = resolve_level(requested, approach=config.approach, backend=config.backend,
                             model_type=loaded.model_type)
    if resolved == "none" or not backend_class(config.backend).optimizes_graph:
        return fp32, {"level": "none", "requested": requested}
    optimized, section = optimize_graph(
        fp32, resolved, workdir / f"fp32-{resolved}", model_type=loaded.model_type,
        model_config=loaded.config, atol=spec.export.optimize_atol, fuse_embeddings="Gather" not in config.op_types,
    )
    section["requested"] = requested
    return optimized, section


def probe_defaults(job: Job, fp32: ExportedModel, work: Path, evaluation: TextDataset,
                   calibration: TextDataset | None) -> str | None:
    """``hardware_probe: auto``: time the CPU-dependent defaults the spec left unset (:mod:`quantkit.probe`);
    the export.optimize level to use (None: the table's). The verdict is kept on ``job.probe``. Each candidate is
    quantized as the run quantizes (with its calibration data)."""
    run = job.run
    spec = run.spec

    def build(level: str) -> Path:
        job.stage(f"hardware probe: building the {level} candidate")
        source, section = optimize(run, fp32, work / "probe", level)
        folder = work / "probe" / level
        quantized = quantize_model(job, source, folder / "model.onnx", calibration=calibration,
                                   evaluation=evaluation, workdir=folder, state_dir=folder / "state")
        job.probe_builds[level] = (source, section, quantized)
        return quantized.path

    profile = hardware_profile(spec.hardware)
    job.probe = probe_fusion(
        spec, fp32, model_type=run.loaded.model_type, sequence_length=evaluation.max_length, build=build,
        matches_this_cpu=spec.hardware in ("auto", detect_target(profile.cpu)), vocab_size=run.vocab_size,
        timer=job.timer, cpu=profile.cpu,
    )
    return job.probe.chosen if job.probe is not None else None


def quantize_model(job: Job, source: ExportedModel, output: Path, *, calibration: TextDataset | None,
                   evaluation: TextDataset, workdir: Path, state_dir: Path) -> QuantizedModel:
    """Quantize ``source`` with the spec's backend; a PyTorch backend gets the loaded model, the evaluation data
    when there is no calibration data (one forward pass), and a folder for resumable training state."""
    spec, run = job.spec, job.run
    backend = get_backend(spec.quantization.backend)
    return backend.quantize(
        source, spec.quantization, output,
        calibration=backend.data_to_quantize_with(calibration, evaluation),
        workdir=workdir, progress=job.progress, loaded=run.loaded, qat=spec.qat,
        state_dir=state_dir if backend.needs_torch else None,
    )


def _probe_rounds(job: Job, quantized: QuantizedModel) -> Rounds | None:
    """The probe's FP32 and int8 rounds when the model being shipped is the one the probe timed (same shape,
    threads and runs per round: the probe times ``evaluation.latency``), else None."""
    probe = job.probe
    if probe is None or probe.rounds is None or probe.chosen not in job.probe_builds:
        return None
    if Path(job.probe_builds[probe.chosen][2].path) != Path(quantized.path):
        return None
    return Rounds({"fp32": list(probe.rounds.times["fp32"]), "int8": list(probe.rounds.times[probe.chosen])})


def _evaluate_pair(job: Job, fp32: ExportedModel, quantized: QuantizedModel, evaluation: TextDataset) -> Any:
    """FP32 and quantized scored on the evaluation data, then timed side by side."""
    spec, run = job.spec, job.run
    common = dict(task=run.task, vocab_size=run.vocab_size, progress=job.progress, measure_speed=False)
    job.stage(f"evaluating FP32 on {len(evaluation)} examples")
    fp32_eval = evaluate_model(fp32.path, evaluation, spec.evaluation, label="fp32", **common)
    job.stage(f"evaluating int8 on {len(evaluation)} examples")
    q_eval = evaluate_model(quantized.path, evaluation, spec.evaluation, label="int8",
                            reference_predictions=fp32_eval.predictions, **common)
    prior = _probe_rounds(job, quantized)
    job.stage("timing FP32 and int8 side by side, each round in fresh processes"
              + (f" (continuing the probe's {prior.rounds} rounds)" if prior is not None else ""))
    timed = side_by_side(
        {"fp32": fp32.path, "int8": quantized.path}, spec.evaluation.latency, baseline="fp32",
        sequence_length=evaluation.max_length, vocab_size=run.vocab_size, timer=job.timer, prior=prior,
    )
    if timed.stats:
        fp32_eval.runtime, q_eval.runtime = timed.stats["fp32"], timed.stats["int8"]
    steps = run.task.decode_steps(spec.evaluation.latency)
    if steps:
        job.stage(f"timing generation: FP32 and int8 side by side, {steps} new tokens after the prefill")
        timed.decode = side_by_side(
            {"fp32": fp32.path, "int8": quantized.path}, spec.evaluation.latency, baseline="fp32",
            sequence_length=evaluation.max_length, vocab_size=run.vocab_size, timer=job.timer, decode=steps)
    return fp32_eval, q_eval, timed


def chance_warning(run: Run, fp32_value: float, evaluation: TextDataset) -> tuple[float | None, str | None]:
    """The evaluation data's chance level of the metric (the task's best constant prediction) and, when the FP32
    model scores no better than it, the warning that says so (a wrong task, head, label mapping or data)."""
    spec = run.spec
    metric = spec.evaluation.metric
    assert metric is not None  # bound by resolve
    chance = run.task.chance_score(metric, evaluation, spec.evaluation.average)
    if chance is None or not spec.evaluation.higher_is_better or fp32_value > chance + CHANCE_MARGIN:
        return chance, None
    return chance, (f"the FP32 model scores {metric} {fp32_value:.4f} on {spec.data.evaluation.path}, no better than "
                    f"chance ({chance:.4f}, always predicting one answer): it does not do this task on this data. "
                    "Check model.task, the label column and its label mapping before trusting the comparison")
    logger.info("int8 / fp32 latency at b%d: %s", spec.evaluation.latency.batch_size,
                timed.ratios["int8"].describe())


def finish(
    job: Job,
    fp32: ExportedModel,
    quantized: QuantizedModel,
    evaluation: TextDataset,
    *,
    target: Path | None = None,
    overwrite: bool | None = None,
    tuning: dict[str, Any] | None = None,
    extra_files: dict[str, str | Path] | None = None,
) -> QuantizationResult:
    """Evaluate FP32 and the quantized model side by side, then write the artifact folder (``target``: another
    folder than the job's, e.g. the closest candidate of a search that met no tolerance)."""
    spec, run = job.spec, job.run
    fp32_eval, q_eval, timed = _evaluate_pair(job, fp32, quantized, evaluation)
    job.lap("evaluate_s")
    shapes = None
    if spec.evaluation.shapes is not None:
        grid = spec.evaluation.shapes
        job.stage(f"shape grid: {len(grid.batch_sizes) * len(grid.sequence_lengths)} shapes, agreement, batch "
                  "invariance" + (" and latency" if grid.latency else ""))
        shapes = check_shapes(
            fp32.path, quantized.path, dataset=spec.data.evaluation, tokenizer=run.loaded.tokenizer,
            model_config=run.loaded.config, grid=spec.evaluation.shapes, latency=spec.evaluation.latency,
            task=run.task,
        )
        job.lap("shapes_s")
    job.timings["total_s"] = round(time.perf_counter() - job.started, 3)
    report = build_report(run, fp32, quantized, fp32_eval, q_eval, evaluation, job.timings)
    add_timing(report, timed, job.probe)
    if shapes is not None:
        report["shapes"] = shapes
    if tuning is not None:
        report["tuning"] = tuning
    chance, warning = chance_warning(run, fp32_eval.value, evaluation)
    report["evaluation"]["chance_level"] = chance
    if warning is not None:
        logger.warning("%s", warning)
        report.setdefault("warnings", []).append(warning)
    extra_files = {**run.task.extra_files(), **(extra_files or {})}
    if spec.output.keep_fp32:
        extra_files = {**extra_files, "fp32/model.onnx": fp32.path}
    job.stage("writing the artifact folder")
    out = write_artifacts(
        target if target is not None else job.target,
        model_path=quantized.path,
        model_config=run.loaded.config,
        tokenizer=run.loaded.tokenizer,
        report=report,
        spec_yaml=spec.to_yaml(),
        ort_config=get_backend(quantized.backend).ort_config(quantized.config, spec.export.opset),
        overwrite=job.overwrite if overwrite is None else overwrite,
        extra_files=extra_files,
    )
    return QuantizationResult(output_dir=out, fp32=fp32_eval, quantized=q_eval, report=report)


# --------------------------------------------------------------------------- the whole run
def run_quantize(job: Job) -> QuantizationResult:
    """load data → export → probe → optimize → quantize → finish, in a temporary work folder."""
    job.mark()
    job.stage("loading data")
    evaluation, calibration = load_data(job.run)
    job.lap("data_s")
    with tempfile.TemporaryDirectory(prefix="quantkit-") as tmp:
        work = Path(tmp)
        job.stage("exporting to ONNX")
        fp32 = export_onnx(job.run.loaded, work / "fp32", job.spec.export)
        job.lap("export_s")
        level = probe_defaults(job, fp32, work, evaluation, calibration)
        job.lap("probe_s")
        state = job.target.parent / f".{job.target.name}.quantkit-state"
        if level is not None and level in job.probe_builds:  # the probe built this very model: ship it
            source, optimization, quantized = job.probe_builds[level]
            job.lap("optimize_s")
        else:
            job.stage("optimizing the FP32 graph")
            source, optimization = optimize(job.run, fp32, work, level)
            job.lap("optimize_s")
            job.stage(f"quantizing ({job.spec.quantization.backend}, {job.spec.quantization.approach})")
            quantized = quantize_model(job, source, work / "quantized" / "model.onnx", calibration=calibration,
                                       evaluation=evaluation, workdir=work, state_dir=state)
        job.lap("quantize_s")
        quantized.details.setdefault("optimization", optimization)
        result = finish(job, fp32, quantized, evaluation)
        shutil.rmtree(state, ignore_errors=True)  # training checkpoints: only needed to resume
        return result
