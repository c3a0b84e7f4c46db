"""The public API: :class:`Quantizer` wires spec → model → export → quantize →
evaluate → artifacts, and returns a :class:`QuantizationResult`."""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import __version__
from .artifacts import REPORT_FILE, check_output_dir, output_lock, package_versions, write_artifacts
from .backends import ProgressFactory, QuantizedModel, get_backend
from .data import TextDataset, load_text_dataset
from .errors import QuantizationError, SpecError, SpecIssue, ToleranceNotMetError
from .evaluation import ModelEvaluation, default_threads, evaluate_model
from .timing import side_by_side
from .timing_report import add_timing
from .export import ExportedModel, export_onnx
from .graph import graph_summary
from .families import family_of, resolve_family
from .fusion import optimize_graph, resolve_level
from .hardware import cpu_info, detect_target, hardware_profile, resolve_quantization
from .shapes import check_shapes
from .models import LoadedModel, load_model
from .spec import QuantizationConfig, QuantizationSpec, load_spec
from .tasks import Task, task_for

logger = logging.getLogger(__name__)

__all__ = ["Quantizer", "QuantizationResult"]

def _tqdm_progress(total: int, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="ex", leave=False, dynamic_ncols=True)


@dataclass
class QuantizationResult:
    """What :meth:`Quantizer.quantize` produced: the artifact folder and the numbers in it."""

    output_dir: Path
    fp32: ModelEvaluation
    quantized: ModelEvaluation
    report: dict[str, Any] = field(repr=False)
    #: What the spec's ``hub: {push: true}`` (or :meth:`push_to_hub`) pushed, if anything.
    push: Any | None = field(default=None, repr=False)

    @property
    def tuning(self) -> dict[str, Any] | None:
        """The search summary (trials, chosen config, why) when the spec had a ``tuning`` section."""
        return self.report.get("tuning")

    @property
    def metric(self) -> str:
        return self.fp32.metric

    @property
    def model_path(self) -> Path:
        return self.output_dir / "model.onnx"

    @property
    def relative_drop(self) -> float:
        """(FP32 − quantized) / |FP32| for higher-is-better metrics; negative means it improved."""
        base = self.fp32.value
        return (base - self.quantized.value) / abs(base) if base else 0.0

    @property
    def latency_ratio(self) -> float | None:
        """int8 / FP32 latency: the median of per-round ratios (timed interleaved) when the report has it."""
        measured = (self.report.get("result") or {}).get("latency_ratio")
        if isinstance(measured, dict) and measured.get("median") is not None:
            return float(measured["median"])
        if self.fp32.runtime is None or self.quantized.runtime is None:
            return None
        return self.quantized.runtime.p50_ms / self.fp32.runtime.p50_ms

    @property
    def size_ratio(self) -> float:
        return self.quantized.size_bytes / self.fp32.size_bytes

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool = False,
        revision: str | None = None,
        commit_message: str | None = None,
        create_pr: bool = False,
        base_model: str | None = None,
        token: str | None = None,
    ) -> Any:
        """Push the artifact folder to the Hub repo ``repo_id`` with a model card generated from the report.

        Only changed files are committed (no commit when nothing changed); the folder is not modified.
        ``token`` defaults to ``HF_TOKEN`` / the stored login. Returns a :class:`quantkit.hub.PushResult`.
        """
        from .hub import push_artifact

        self.push = push_artifact(
            self.output_dir, repo_id, private=private, revision=revision, commit_message=commit_message,
            create_pr=create_pr, base_model=base_model, token=token,
        )
        return self.push

    @classmethod
    def from_pretrained(
        cls, path_or_repo_id: str | Path, *, revision: str | None = None, token: str | None = None
    ) -> "QuantizationResult":
        """Load a quantized artifact (a local folder, or a Hub repo id pushed by quantkit) from its report.

        The numbers come from ``quantkit_report.json``; per-example predictions are not stored, so
        ``fp32.predictions`` / ``quantized.predictions`` are empty.
        """
        import numpy as np

        from .errors import ArtifactNotFoundError
        from .evaluation import RuntimeStats
        from .hub import resolve_artifact

        folder = resolve_artifact(path_or_repo_id, revision, token=token)
        if not (folder / REPORT_FILE).is_file():
            raise ArtifactNotFoundError(f"{path_or_repo_id} has no {REPORT_FILE}: not written by quantkit")
        report = json.loads((folder / REPORT_FILE).read_text(encoding="utf-8"))
        known = set(RuntimeStats.__dataclass_fields__)

        def evaluation(key: str, path: Path) -> ModelEvaluation:
            d = report[key]
            latency = d.get("latency")
            runtime = RuntimeStats(**{k: v for k, v in latency.items() if k in known}) if latency else None
            return ModelEvaluation(label=d.get("label", key), path=path, metric=d["metric"], value=d["value"],
                                   size_bytes=d["size_bytes"], runtime=runtime, eval_s=d.get("eval_s", 0.0),
                                   predictions=np.empty(0))

        base = Path(str(report.get("model", {}).get("name_or_path", "")))
        return cls(output_dir=folder, fp32=evaluation("fp32", base),
                   quantized=evaluation("quantized", folder / "model.onnx"), report=report)

    def summary_rows(self) -> list[tuple[str, str, str, str]]:
        """(row, FP32, quantized, ratio) — the table the CLI prints."""
        rows = [
            (self.metric, f"{self.fp32.value:.4f}", f"{self.quantized.value:.4f}", f"{-self.relative_drop:+.2%}"),
        ]
        if self.fp32.runtime and self.quantized.runtime:
            f, q = self.fp32.runtime, self.quantized.runtime
            shape = f"b{f.batch_size}×s{f.sequence_length}, {f.threads} thr"
            measured = (self.report.get("result") or {}).get("latency_ratio")
            ratio = (f"{measured['median']:.2f}x ({measured['low']:.2f}-{measured['high']:.2f})"
                     if isinstance(measured, dict) else f"{q.p50_ms / f.p50_ms:.2f}x")
            rows.append((f"p50 latency ms ({shape})", f"{f.p50_ms:.2f}", f"{q.p50_ms:.2f}", ratio))
            rows.append(("p90 latency ms", f"{f.p90_ms:.2f}", f"{q.p90_ms:.2f}", f"{q.p90_ms / f.p90_ms:.2f}x"))
            rows.append(("peak RSS MB", f"{f.peak_rss_mb:.0f}", f"{q.peak_rss_mb:.0f}", f"{q.peak_rss_mb / f.peak_rss_mb:.2f}x"))
        rows.append(
            ("size MB", f"{self.fp32.size_bytes / 2**20:.1f}", f"{self.quantized.size_bytes / 2**20:.1f}", f"{self.size_ratio:.2f}x")
        )
        return rows


def _examples(data: TextDataset) -> int:
    """Evaluation examples (QA: questions, not context windows; embedding pairs: pairs)."""
    examples = data.examples or {}
    return int(examples.get("count") or examples.get("pairs") or len(data))


class Quantizer:
    """Quantize a Hugging Face model with a quantkit spec.

    >>> q = Quantizer.from_pretrained("../shared/models/minilm-spam")   # doctest: +SKIP
    >>> result = q.quantize("recipes/minilm-spam-dynamic.yaml", output_dir="out/dyn")  # doctest: +SKIP
    """

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        task: str | None = None,
        *,
        revision: str | None = None,
        trust_remote_code: bool = False,
        **load_options: Any,
    ) -> "Quantizer":
        """Load a Hub model id or local folder with the transformers Auto classes.

        An artifact folder quantkit wrote is already quantized: load that with :meth:`load_quantized`.
        """
        if (Path(str(name_or_path)).expanduser() / REPORT_FILE).is_file():
            from .errors import ModelLoadError

            raise ModelLoadError(
                f"{name_or_path} is a model quantized by quantkit, not a model to quantize",
                hint="load it with Quantizer.load_quantized(...) or ORTModelFor*.from_pretrained(...); to quantize "
                "again, start from its base model (model.name_or_path in quantkit_report.json)",
            )
        loaded = load_model(
            str(name_or_path), task=task, revision=revision, trust_remote_code=trust_remote_code, **load_options
        )
        return cls(loaded)

    @staticmethod
    def load_quantized(
        path_or_repo_id: str | Path, *, revision: str | None = None, token: str | None = None
    ) -> QuantizationResult:
        """Load a model quantized by quantkit, from its artifact folder or the Hub repo it was pushed to.

        >>> result = Quantizer.load_quantized("my-org/minilm-spam-int8")   # doctest: +SKIP
        >>> result.model_path, result.relative_drop                        # doctest: +SKIP
        """
        return QuantizationResult.from_pretrained(path_or_repo_id, revision=revision, token=token)

    @classmethod
    def from_spec(cls, spec: QuantizationSpec) -> "Quantizer":
        """Load the model named in ``spec.model``."""
        m = spec.model
        if not m.name_or_path:
            raise SpecError([SpecIssue(None, "model.name_or_path", "required: set it in the spec or pass --model")])
        return cls.from_pretrained(m.name_or_path, m.task, revision=m.revision, trust_remote_code=m.trust_remote_code)

    # ------------------------------------------------------------------ public
    def quantize(
        self,
        spec: QuantizationSpec | str | Path,
        output_dir: str | Path | None = None,
        *,
        overwrite: bool | None = None,
        progress: bool | ProgressFactory = True,
        check: bool = True,
    ) -> QuantizationResult:
        """Export, quantize, evaluate FP32 and quantized models, and write the artifact folder.

        With a ``tuning`` section in the spec this runs the accuracy-tolerance search (:meth:`tune`).
        The pre-flight checks (:func:`quantkit.checks.run_checks`) run first unless ``check=False``;
        they raise :class:`~quantkit.errors.PreflightError` listing every problem found.
        """
        spec, target, overwrite, factory = self._prepare(spec, output_dir, overwrite, progress, check)
        with output_lock(target):  # one run per output folder; cleans what a killed run left
            with self._shard_executor(spec):  # every evaluation of the run shares one cluster connection
                if spec.tuning is not None:
                    result = self._tune(spec, target, overwrite, factory, None)
                else:
                    result = self._run(spec, target, overwrite, factory)
            return self._push_if_asked(spec, result)

    def tune(
        self,
        spec: QuantizationSpec | str | Path,
        output_dir: str | Path | None = None,
        *,
        overwrite: bool | None = None,
        progress: bool | ProgressFactory = True,
        on_trial: Any | None = None,
        check: bool = True,
    ) -> QuantizationResult:
        """Search the spec's ``tuning.space`` for the best model within the accuracy tolerance.

        Finished trials live in a SQLite store beside the output folder, so rerunning the same
        call resumes. Raises :class:`~quantkit.errors.ToleranceNotMetError` (after saving the
        closest candidate in ``<output>-closest``) when nothing is within tolerance. The
        pre-flight checks run first unless ``check=False``.
        """
        spec, target, overwrite, factory = self._prepare(spec, output_dir, overwrite, progress, check, tune=True)
        if spec.tuning is None:
            spec = spec.with_overrides(tuning={})
        with output_lock(target):  # one run per output folder; cleans what a killed run left
            with self._shard_executor(spec):  # every evaluation of the run shares one cluster connection
                result = self._tune(spec, target, overwrite, factory, on_trial)
            return self._push_if_asked(spec, result)

    @staticmethod
    def _push_if_asked(spec: QuantizationSpec, result: QuantizationResult) -> QuantizationResult:
        """``hub: {push: true}``: push the finished artifact folder; a failed push keeps it and says how to retry."""
        hub = spec.hub
        if hub is None or not hub.push:
            return result
        from .errors import HubError

        try:
            result.push_to_hub(hub.repo_id, private=hub.private, revision=hub.revision,
                               commit_message=hub.commit_message, create_pr=hub.create_pr)
        except HubError as exc:
            retry = f"quantkit push {result.output_dir} --repo-id {hub.repo_id}"
            raise type(exc)(f"{exc}. The artifacts are saved in {result.output_dir}; retry the upload with "
                            f"`{retry}`", repo_id=exc.repo_id, status=exc.status, hint=exc.hint) from None
        return result

    def _prepare(
        self,
        spec: QuantizationSpec | str | Path,
        output_dir: str | Path | None,
        overwrite: bool | None,
        progress: bool | ProgressFactory,
        check: bool = True,
        tune: bool = False,
    ) -> tuple[QuantizationSpec, Path, bool, ProgressFactory | None]:
        spec_file = None
        if not isinstance(spec, QuantizationSpec):
            spec_file = Path(spec).name
            spec = load_spec(spec)
        if spec.model.name_or_path and spec.model.name_or_path != self.loaded.name_or_path:
            logger.info("using the loaded model %s (spec names %s)", self.loaded.name_or_path, spec.model.name_or_path)
        target = output_dir if output_dir is not None else spec.output.dir
        if target is None:
            raise SpecError([SpecIssue(None, "output.dir", "required: set it in the spec or pass --output")])
        overwrite = spec.output.overwrite if overwrite is None else overwrite
        if check:
            self._preflight(spec, spec_file, Path(target), overwrite, tune or spec.tuning is not None)
        target = check_output_dir(target, overwrite)
        spec = self._resolve_task(spec)
        factory: ProgressFactory | None
        if progress is True:
            factory = _tqdm_progress
        elif progress is False:
            factory = None
        else:
            factory = progress
        spec = self._resolve_hardware(spec)
        spec = self._resolve_family(spec)
        return spec, target, overwrite, factory

    def task_for(self, spec: QuantizationSpec | None = None) -> Task:
        """The loaded model's task, bound to its config and the spec's ``task_options``."""
        from .models import model_folder

        folder = model_folder(self.loaded.name_or_path, self.loaded.revision,
                              files=("modules.json", "1_Pooling/config.json"))
        return task_for(self.loaded.task, self.loaded.config, spec.task_options if spec else None, folder)

    def _resolve_task(self, spec: QuantizationSpec) -> QuantizationSpec:
        """Bind the task; fill ``evaluation.metric`` with its default when the spec left it out."""
        self.task = self.task_for(spec)
        problem = None
        if spec.evaluation.metric is not None:
            problem = self.task.check_metric(spec.evaluation.metric, spec.evaluation.average)
        if problem:
            raise SpecError([SpecIssue(None, "evaluation.metric", problem)])
        labelled = self.task.columns(spec.data.evaluation).label is not None
        metric = spec.evaluation.metric or self.task.default_metric(labelled)
        if self.task.metrics[metric].needs_labels and not labelled:
            raise SpecError([SpecIssue(None, "data.evaluation.label_column", f"metric {metric!r} needs "
                                       "references; set a label column or use metric: agreement")])
        if spec.quantization.approach == "qat" and not self.task.supports_qat:
            raise SpecError([SpecIssue(None, "quantization.approach", f"qat is not available for {self.task.name}")])
        return spec.model_copy(update={
            "evaluation": spec.evaluation.model_copy(update={"metric": metric}),
            "model": spec.model.model_copy(update={"task": self.loaded.task}),
        })

    def _resolve_hardware(self, spec: QuantizationSpec) -> QuantizationSpec:
        """Fill the quantization fields the spec left unset with the hardware target's defaults."""
        profile = hardware_profile(spec.hardware)
        config, chosen = resolve_quantization(spec.quantization, profile)
        self._hardware = {**profile.to_dict(), "chosen": chosen}
        if not profile.matches_this_cpu:
            logger.warning(
                "hardware: %s is not this CPU (%s, %s): latency measured here does not show how the model runs there",
                profile.target, profile.cpu.model, detect_target(profile.cpu),
            )
        if chosen:
            spec = spec.model_copy(update={"quantization": config})
        return spec

    def _resolve_family(self, spec: QuantizationSpec) -> QuantizationSpec:
        """Fill the quantization fields still unset with the model family's defaults (quantkit/families.py)."""
        family = family_of(self.loaded.model_type)
        config, chosen = resolve_family(spec.quantization, self.loaded.model_type)
        self._family = {"name": family.name, "chosen": chosen} if family is not None else None
        return spec.model_copy(update={"quantization": config}) if chosen else spec

    def _optimize(self, spec: QuantizationSpec, fp32: ExportedModel, workdir: Path,
                  level: str | None = None, config: QuantizationConfig | None = None) -> tuple[ExportedModel, dict[str, Any]]:
        """The FP32 graph the backend quantizes: ``export.optimize`` (or ``level``) applied and checked."""
        config = config or spec.quantization
        resolved = resolve_level(level or spec.export.optimize, approach=config.approach, backend=config.backend,
                                 model_type=self.loaded.model_type)
        if resolved == "none" or get_backend(config.backend).needs_torch:
            return fp32, {"level": "none", "requested": level or spec.export.optimize}
        optimized, section = optimize_graph(
            fp32, resolved, workdir / f"fp32-{resolved}", model_type=self.loaded.model_type,
            model_config=self.loaded.config, atol=spec.export.optimize_atol,
            fuse_embeddings="Gather" not in config.op_types,
        )
        section["requested"] = level or spec.export.optimize
        return optimized, section
    def _probe_defaults(self, spec: QuantizationSpec, fp32: ExportedModel, work: Path,
                        evaluation: TextDataset) -> str | None:
        """``hardware_probe: auto``: time the CPU-dependent defaults the spec left unset (quantkit.probe);
        the export.optimize level to use (None: the table's)."""
        from .probe import probe_fusion

        def build(level: str) -> Path:
            source, _ = self._optimize(spec, fp32, work / "probe", level)
            return get_backend(spec.quantization.backend).quantize(
                source, spec.quantization, work / "probe" / level / "model.onnx", workdir=work / "probe" / level,
                loaded=self.loaded).path

        profile = hardware_profile(spec.hardware)
        self._probe = probe_fusion(
            spec, fp32, model_type=self.loaded.model_type, sequence_length=evaluation.max_length, build=build,
            matches_this_cpu=spec.hardware in ("auto", detect_target(profile.cpu)),
            vocab_size=int(getattr(self.loaded.config, "vocab_size", 30522)), timer=getattr(self, "_timer", None),
        )
        return self._probe.chosen if self._probe is not None else None

    def _preflight(self, spec: QuantizationSpec, spec_file: str | None, target: Path, overwrite: bool,
                   tune: bool) -> None:
        """The pre-flight checks with the loaded model: warnings are logged, errors raise PreflightError."""
        from .checks import run_checks

        report = run_checks(spec, self.loaded, output_dir=target, overwrite=overwrite, tune=tune, spec_file=spec_file)
        for problem in report.warnings:
            logger.warning("pre-flight: %s", problem)
        for estimate in report.estimates:
            logger.info("pre-flight estimate: %s: %s", estimate.name, estimate.summary)
        report.raise_for_errors()

    # ------------------------------------------------------------------ private
    def _load_data(self, spec: QuantizationSpec) -> tuple[TextDataset, TextDataset | None]:
        common = dict(max_length=spec.data.max_length, padding=spec.data.padding)
        tok, task = self.loaded.tokenizer, self.task
        evaluation = load_text_dataset(spec.data.evaluation, tok, task, key="data.evaluation", **common)
        calibration = None
        static = spec.quantization.approach in ("static", "qat") or (
            spec.tuning is not None and "static" in spec.tuning.space.get("approach", [])
        )
        if (static or spec.quantization.backend == "neural-compressor") and spec.data.calibration is not None:
            calibration = load_text_dataset(spec.data.calibration, tok, task, key="data.calibration", **common)
        return evaluation, calibration

    def _run(
        self, spec: QuantizationSpec, target: Path, overwrite: bool, progress: ProgressFactory | None
    ) -> QuantizationResult:
        timings: dict[str, float] = {}
        started = time.perf_counter()

        def lap(name: str, since: float) -> float:
            now = time.perf_counter()
            timings[name] = round(now - since, 3)
            return now

        t = time.perf_counter()
        evaluation, calibration = self._load_data(spec)
        t = lap("data_s", t)
        backend = get_backend(spec.quantization.backend)
        with tempfile.TemporaryDirectory(prefix="quantkit-") as tmp:
            work = Path(tmp)
            fp32 = export_onnx(self.loaded, work / "fp32", spec.export)
            t = lap("export_s", t)
            level = self._probe_defaults(spec, fp32, work, evaluation)
            t = lap("probe_s", t)
            source, optimization = self._optimize(spec, fp32, work, level)
            t = lap("optimize_s", t)
            state = target.parent / f".{target.name}.quantkit-state"
            quantized = backend.quantize(
                source, spec.quantization, work / "quantized" / "model.onnx",
                calibration=calibration if calibration is not None or not backend.needs_torch else evaluation,
                workdir=work, progress=progress, loaded=self.loaded, qat=spec.qat,
                state_dir=state if backend.needs_torch else None,
            )
            t = lap("quantize_s", t)
            quantized.details.setdefault("optimization", optimization)
            result = self._finish(spec, target, overwrite, progress, fp32, quantized, backend, evaluation,
                                  timings, started, t)
            shutil.rmtree(state, ignore_errors=True)  # training checkpoints: only needed to resume
            return result

    def _finish(
        self,
        spec: QuantizationSpec,
        target: Path,
        overwrite: bool,
        progress: ProgressFactory | None,
        fp32: ExportedModel,
        quantized: QuantizedModel,
        backend: Any,
        evaluation: TextDataset,
        timings: dict[str, float],
        started: float,
        t: float,
        *,
        tuning: dict[str, Any] | None = None,
        extra_files: dict[str, str | Path] | None = None,
    ) -> QuantizationResult:
        """Evaluate FP32 and the quantized model side by side, then write the artifact folder."""
        vocab = int(getattr(self.loaded.config, "vocab_size", 30522))
        fp32_eval = evaluate_model(
            fp32.path, evaluation, spec.evaluation, label="fp32", task=self.task, vocab_size=vocab, progress=progress,
            measure_speed=False,
        )
        q_eval = evaluate_model(
            quantized.path, evaluation, spec.evaluation, label="int8", task=self.task, vocab_size=vocab,
            reference_predictions=fp32_eval.predictions, progress=progress, measure_speed=False,
        )
        timed = side_by_side(
            {"fp32": fp32.path, "int8": quantized.path}, spec.evaluation.latency, baseline="fp32",
            sequence_length=evaluation.max_length, vocab_size=vocab, timer=getattr(self, "_timer", None),
        )
        if timed.stats:
            fp32_eval.runtime, q_eval.runtime = timed.stats["fp32"], timed.stats["int8"]
        logger.info("int8 / fp32 latency at b%d: %s", spec.evaluation.latency.batch_size,
                    timed.ratios["int8"].describe())
        timings["evaluate_s"] = round(time.perf_counter() - t, 3)
        if spec.evaluation.shapes is not None:
            t = time.perf_counter()
            shapes = check_shapes(
                fp32.path, quantized.path, dataset=spec.data.evaluation, tokenizer=self.loaded.tokenizer,
                model_config=self.loaded.config, grid=spec.evaluation.shapes, latency=spec.evaluation.latency,
                task=self.task,
            )
            timings["shapes_s"] = round(time.perf_counter() - t, 3)
        timings["total_s"] = round(time.perf_counter() - started, 3)
        report = self._report(spec, fp32, quantized, fp32_eval, q_eval, evaluation, timings)
        add_timing(report, timed, getattr(self, "_probe", None))
        if spec.evaluation.shapes is not None:
            report["shapes"] = shapes
        if tuning is not None:
            report["tuning"] = tuning
        extra_files = {**self.task.extra_files(), **(extra_files or {})}
        if spec.output.keep_fp32:
            extra_files = {**extra_files, "fp32/model.onnx": fp32.path}
        out = write_artifacts(
            target,
            model_path=quantized.path,
            model_config=self.loaded.config,
            tokenizer=self.loaded.tokenizer,
            report=report,
            spec_yaml=spec.to_yaml(),
            ort_config=backend.ort_config(quantized.config, spec.export.opset),
            overwrite=overwrite,
            extra_files=extra_files,
        )
        return QuantizationResult(output_dir=out, fp32=fp32_eval, quantized=q_eval, report=report)

    def _tune(
        self,
        spec: QuantizationSpec,
        target: Path,
        overwrite: bool,
        progress: ProgressFactory | None,
        on_trial: Any | None,
    ) -> QuantizationResult:
        from .search.report import describe_config, plot_tuning, tuning_summary
        from .search.runner import OnnxTrialRunner
        from .search.space import SearchPoint, expand_space
        from .search.store import TrialStore
        from .search.strategies import SearchContext, run_search
        from .search.tolerance import Tolerance

        tuning = spec.tuning
        assert tuning is not None
        self._probe = None  # a search does not probe (its space has the levels): no verdict of an earlier quantize
        timings: dict[str, float] = {}
        started = t = time.perf_counter()
        evaluation, calibration = self._load_data(spec)
        timings["data_s"] = round(time.perf_counter() - t, 3)
        state = target.parent / f".{target.name}.quantkit-tuning"
        state.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        fp32 = export_onnx(self.loaded, state / "fp32", spec.export)
        timings["export_s"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        runner = OnnxTrialRunner(
            spec, fp32, evaluation, calibration, state,
            vocab_size=int(getattr(self.loaded.config, "vocab_size", 30522)), progress=progress, loaded=self.loaded,
            optimizer=lambda level, config: self._optimize(spec, fp32, state, level, config), task=self.task,
        )
        tolerance = Tolerance.from_spec(tuning.tolerance, spec.evaluation.higher_is_better)
        base = spec.quantization.model_dump(mode="json")

        def report_trial(trial: Any, ctx: Any) -> None:
            logger.info(
                "trial %d [%s] %s: %s metric=%s p50=%s%s", trial.idx, trial.origin, describe_config(trial.config, base),
                trial.status, f"{trial.metric:.4f}" if trial.metric is not None else "-",
                f"{trial.latency_ms:.1f}ms" if trial.latency_ms is not None else "-",
                " PASS" if trial.passed else "",
            )
            if on_trial is not None:
                on_trial(trial, ctx)

        candidates = expand_space(spec.quantization, tuning.space, optimize=spec.export.optimize)
        logger.info("search space: %d candidate(s); strategy %s, objective %s", len(candidates),
                    tuning.strategy, tuning.objective)
        from .executors import make_executor

        with make_executor(tuning.executor) as executor, TrialStore(state / "trials.db") as store:
            ctx = SearchContext(
                runner, tolerance, store, self._run_key(spec), objective=tuning.objective,
                max_trials=tuning.max_trials, timeout=tuning.timeout, prune=tuning.prune, on_trial=report_trial,
                executor=executor,
            )
            outcome = run_search(
                tuning.strategy, ctx, candidates,
                max_nodes=tuning.fallback.max_nodes, fallback_candidates=tuning.fallback.candidates,
            )
            described = executor.describe()
        timings["search_s"] = round(time.perf_counter() - t, 3)
        summary = tuning_summary(outcome, tolerance, tuning.strategy, tuning.objective, base)
        summary["executor"] = described
        summary["space_size"] = len(candidates)
        summary["latency_decision"] = outcome.latency_decision
        picked = outcome.chosen or outcome.closest
        if picked is None:
            errors = "; ".join(sorted({tr.error or tr.status for tr in outcome.trials}))[:800]
            raise QuantizationError(f"no trial produced a usable model ({len(outcome.trials)} tried): {errors}")
        config = SearchPoint.model_validate(picked.config)
        t = time.perf_counter()
        path = runner.quantize(config)
        quantized = QuantizedModel(path=path, backend=config.backend, config=config, summary=graph_summary(path))
        plot = plot_tuning(summary, spec.evaluation.metric, state / "tuning.png")
        extra = {"tuning.png": plot, "trials.db": state / "trials.db"}
        if outcome.chosen is None:
            closest_dir = target.parent / f"{target.name}-closest-not-within-tolerance"
            self._finish(spec, closest_dir, True, progress, fp32, quantized, get_backend(config.backend), evaluation,
                         timings, started, t, tuning=summary, extra_files=extra)
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
        result = self._finish(spec, target, overwrite, progress, fp32, quantized, get_backend(config.backend),
                              evaluation, timings, started, t, tuning=summary, extra_files=extra)
        shutil.rmtree(state / "trials", ignore_errors=True)  # trial models; trials.db stays for resume
        return result

    @staticmethod
    @contextmanager
    def _shard_executor(spec: QuantizationSpec) -> Iterator[None]:
        """With ``evaluation.shards``: its executor, opened once for the whole run."""
        from .executors import use_executor

        if (spec.evaluation.shards or 1) <= 1:
            yield
            return
        with use_executor(spec.evaluation.executor):
            yield

    def _run_key(self, spec: QuantizationSpec) -> str:
        """Fingerprint of everything a trial's numbers depend on, besides its own config."""
        files: dict[str, Any] = {}
        src = Path(self.loaded.name_or_path)
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
            "model": [self.loaded.name_or_path, self.loaded.revision, self.loaded.task],
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

    def _report(
        self,
        spec: QuantizationSpec,
        fp32: ExportedModel,
        quantized: QuantizedModel,
        fp32_eval: ModelEvaluation,
        q_eval: ModelEvaluation,
        evaluation: TextDataset,
        timings: dict[str, float],
    ) -> dict[str, Any]:
        result = {
            "relative_drop": (fp32_eval.value - q_eval.value) / abs(fp32_eval.value) if fp32_eval.value else 0.0,
            "size_ratio": q_eval.size_bytes / fp32_eval.size_bytes,
        }
        if fp32_eval.runtime and q_eval.runtime:
            result["latency_ratio_p50"] = q_eval.runtime.p50_ms / fp32_eval.runtime.p50_ms
        return {
            "quantkit_report_version": 1,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model": {
                "name_or_path": self.loaded.name_or_path,
                "revision": self.loaded.revision,
                "task": self.loaded.task,
                "model_type": self.loaded.model_type,
                "parameters": self.loaded.num_parameters,
                "family": getattr(self, "_family", None),
            },
            "export": {"exporter": fp32.exporter, "opset": fp32.opset, "max_abs_diff": fp32.max_abs_diff,
                       "inputs": fp32.input_names},
            "quantization": {
                "backend": quantized.backend,
                "config": quantized.config.model_dump(mode="json"),
                "graph": quantized.summary,
                "calibration_s": round(quantized.calibration_s, 3),
                **quantized.details,
            },
            "task": self.task.describe(),
            "evaluation": {
                "dataset": spec.data.evaluation.path,
                "dataset_local": spec.data.evaluation.is_local,
                "split": spec.data.evaluation.split if not spec.data.evaluation.is_local else Path(
                    spec.data.evaluation.path).stem,
                "columns": list(self.task.columns(spec.data.evaluation).text),
                "label_column": self.task.columns(spec.data.evaluation).label,
                "examples": _examples(evaluation),
                "rows": len(evaluation),
                "max_length": spec.data.max_length,
                "metric": spec.evaluation.metric,
                "higher_is_better": spec.evaluation.higher_is_better,
            },
            "fp32": fp32_eval.to_dict(),
            "quantized": q_eval.to_dict(),
            "result": result,
            "timings": timings,
            "environment": {
                "python": platform.python_version(),
                "platform": platform.platform(),
                "cpu": cpu_info().to_dict(),
                "packages": package_versions(),
            },
            "hardware": getattr(self, "_hardware", None) or hardware_profile(spec.hardware).to_dict(),
            "spec": spec.model_dump(mode="json"),
            "files": {"report": REPORT_FILE},
        }
