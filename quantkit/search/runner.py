"""The real trial runner: quantize a candidate with its backend, time it on this CPU, score it
(stopping early when it can no longer pass), and rank nodes by quantization sensitivity; and the part of
a trial that runs on a worker of a cluster executor (quantize and score).

:meth:`OnnxTrialRunner.for_workers` builds a :class:`WorkerTrialRunner` (graphs as bytes, data, spec,
task: what goes to the workers once per search); the executor puts it in the object store once; on each
node the graphs are written once to the node-local cache (:mod:`quantkit.executors.shipping`) and each
worker process builds one :class:`OnnxTrialRunner` from it. A trial returns a :class:`RemoteScore`
(metric, size, the quantized graph's files); the driver writes the files where its runner keeps trial
models and times the candidate itself (:meth:`OnnxTrialRunner.finish_remote`).
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any


import numpy as np

from ..backends import ProgressFactory, get_backend
from ..data import TextDataset
from ..evaluation import OnnxRunner, predict
from ..executors.shipping import cache_root, files_digest, model_files, write_files
from ..export import ExportedModel
from ..graph import model_size_bytes
from ..latency import SubprocessTimer, Rounds, Timer, done_when_ranked, done_when_separable, measure, separable
from ..spec import LatencySpec, QuantizationConfig, QuantizationSpec
from .space import config_hash
from .strategies import Measurement, PruneHint, TrialOutcome

logger = logging.getLogger(__name__)

__all__ = ["OnnxTrialRunner", "WorkerTrialRunner", "RemoteScore", "node_sensitivity"]

_CHUNK = 128
#: Rounds the final side-by-side of the leading candidates may take when ``latency.max_rounds`` is unset.
CONFIRM_ROUNDS = 7


class OnnxTrialRunner:
    """Quantizes and evaluates candidates of one search on one FP32 ONNX model."""

    def __init__(
        self,
        spec: QuantizationSpec,
        fp32: ExportedModel,
        evaluation: TextDataset,
        calibration: TextDataset | None,
        workdir: Path,
        *,
        vocab_size: int,
        task: Any,
        progress: ProgressFactory | None = None,
        loaded: object | None = None,
        optimizer: Callable[[str, QuantizationConfig], tuple[ExportedModel, dict[str, Any]]] | None = None,
        timer: Timer | None = None,
    ) -> None:
        #: Times one model once (tests inject a fake); default: a fresh process per model and round.
        self.timer = timer
        self.loaded = loaded
        #: ``optimizer(level, config)`` → the FP32 graph a candidate is quantized from (export.optimize).
        self.optimizer = optimizer
        self.optimized: dict[str, tuple[ExportedModel, dict[str, Any]]] = {}
        self.spec = spec
        self.fp32 = fp32
        self.evaluation = evaluation
        self.calibration = calibration
        self.workdir = Path(workdir)
        self.vocab_size = vocab_size
        self.progress = progress
        assert spec.tuning is not None
        self.latency: LatencySpec = spec.tuning.latency or spec.evaluation.latency
        self.task = task
        self.metric_name = spec.evaluation.metric or task.default_metric(evaluation.labels is not None)
        self.needs_labels = task.metrics[self.metric_name].needs_labels
        self.fp32_predictions: Any = None
        #: ONNX Runtime threads when scoring (a cluster worker uses its ``cpus_per_trial``).
        self.score_threads: int | None = self.latency.threads
        #: On a worker: every source graph was shipped (a missing one is an error, never a silent FP32).
        self.remote_only = False
        self._worker: Any = None
        self._worker_keys: dict[str, QuantizationConfig] = {}

    # ------------------------------------------------------------------ helpers
    def _references(self) -> Any:
        """FP32 predictions for label-free metrics (computed once), else the labels (None when not per row)."""
        if self.needs_labels:
            return self.evaluation.labels
        if self.fp32_predictions is None:
            self.fp32_predictions = self._predict(self.fp32.path, self.evaluation)
        return self.fp32_predictions

    def _timer(self) -> Timer:
        return self.timer or SubprocessTimer(self.latency, sequence_length=self.evaluation.max_length,
                                             vocab_size=self.vocab_size)

    def _time(self, paths: dict[str, Any], done: Callable[[Rounds], bool] | None,
              max_rounds: int | None = None) -> Rounds:
        return measure(paths, self._timer(), min_rounds=self.latency.rounds,
                       max_rounds=max_rounds or self.latency.round_budget, done=done)

    def _runtime(self, path: Path) -> float:
        return self._time({"m": path}, None).median_ms("m")

    def confirm_latency(self, configs: list[QuantizationConfig]) -> Rounds:
        """Each config's model timed side by side in interleaved rounds (labels: config hashes), adding
        rounds until the fastest is separable from the others or the budget is spent: ``latency.max_rounds``
        when set, else at least :data:`CONFIRM_ROUNDS` (the winner is decided here, so it gets more rounds
        than a trial's own timing)."""
        paths = {config_hash(c): self.quantize(c) for c in configs}
        budget = self.latency.round_budget if self.latency.max_rounds else max(CONFIRM_ROUNDS, self.latency.round_budget)
        return self._time(paths, done_when_ranked(list(paths)), max_rounds=budget)

    def _predict(self, path: Path, data: TextDataset) -> Any:
        """The task's predictions of ``path`` on ``data`` (sharded when ``evaluation.shards`` says so)."""
        return predict(path, data, self.spec.evaluation, self.task, threads=self.score_threads)

    def score(self, path: Path, hint: PruneHint) -> tuple[float | None, str | None]:
        """The metric on the evaluation set; (None, reason) when it provably cannot reach the hint."""
        return self._score(path, hint)

    def _score(self, path: Path, hint: PruneHint) -> tuple[float | None, str | None]:
        references = self._references()
        task, metric, bs = self.task, self.metric_name, self.spec.evaluation.batch_size
        average = self.spec.evaluation.average
        n = len(self.evaluation)
        can_prune = (hint.required_metric is not None and hint.higher_is_better and task.chunkable
                     and references is not None and task.hits(metric, references[:1], references[:1]) is not None)
        if not can_prune:
            predictions = self._predict(path, self.evaluation)
            return task.compute(metric, predictions, self.evaluation, average=average,
                                reference=self.fp32_predictions), None
        runner = OnnxRunner(path, self.score_threads)
        preds: list[Any] = []
        hits = 0
        for start in range(0, n, _CHUNK):
            chunk = self.evaluation.slice(start, start + _CHUNK)
            p = runner.run(chunk, bs, task).values
            preds.append(p)
            hits += int(np.sum(task.hits(metric, p, references[start: start + len(p)])))
            done = start + len(p)
            best_possible = (hits + (n - done)) / n
            if best_possible < hint.required_metric and done < n:
                return None, f"pruned after {done}/{n} examples: at most {best_possible:.4f} < {hint.required_metric:.4f}"
        predictions = task.collect(preds, self.evaluation)
        return task.compute(metric, predictions, self.evaluation, average=average,
                            reference=self.fp32_predictions), None

    # ------------------------------------------------------------------ TrialRunner
    def baseline(self) -> Measurement:
        metric, _ = self._score(self.fp32.path, PruneHint())
        assert metric is not None
        return Measurement(metric, self._runtime(self.fp32.path), model_size_bytes(self.fp32.path))

    def model_path(self, config: QuantizationConfig) -> Path:
        return self.workdir / "trials" / config_hash(config) / "model.onnx"

    def source(self, config: QuantizationConfig) -> tuple[ExportedModel, dict[str, Any]]:
        """The FP32 graph ``config`` is quantized from: the export, optimized at the candidate's level."""
        level = getattr(config, "optimize", None) or self.spec.export.optimize
        key = self.source_key(config)
        if key in self.optimized:
            return self.optimized[key]
        if self.remote_only:
            raise RuntimeError(f"the source graph {key!r} was not shipped to this worker")
        if self.optimizer is None:
            return self.fp32, {"level": "none", "requested": level}
        if key not in self.optimized:
            self.optimized[key] = self.optimizer(level, config)
        return self.optimized[key]

    def source_key(self, config: QuantizationConfig) -> str:
        level = getattr(config, "optimize", None) or self.spec.export.optimize
        return f"{level}:{config.approach}:{config.backend}"

    # ------------------------------------------------------------------ split trials (cluster executors)
    def for_workers(self, configs: list[QuantizationConfig], threads: int = 1) -> WorkerTrialRunner:
        """What a cluster's workers need to run :meth:`run_remote`-style trials of ``configs`` (and of the
        ones shipped before): built on the driver (FP32 references, optimized graphs), then reused until a
        config needs a source graph not shipped yet."""
        new = {self.source_key(c): c for c in configs if self.source_key(c) not in self._worker_keys}
        if self._worker is None or new or self._worker.threads != threads:
            self._references()
            self._worker_keys.update(new)
            self._worker = WorkerTrialRunner.from_runner(self, dict(self._worker_keys), threads)
        return self._worker

    def finish_remote(self, config: QuantizationConfig, hint: PruneHint, scored: RemoteScore) -> TrialOutcome:
        """The driver's half of a trial scored on a worker: keep its model where :meth:`quantize` finds it,
        then time it here as :meth:`run` does (interleaved with FP32 and the best so far)."""
        path = self.model_path(config)
        if not path.is_file():
            shutil.rmtree(path.parent, ignore_errors=True)
            write_files(path.parent, scored.files)
        if scored.status != "ok":
            return TrialOutcome("pruned", None, None, scored.size_bytes, str(path), note=scored.note)
        latency, note, slower = self._time_trial(path, hint)
        if slower:
            return TrialOutcome("pruned", None, latency, scored.size_bytes, str(path), note=note)
        return TrialOutcome("ok", scored.metric, latency, scored.size_bytes, str(path), note=note)

    def quantize(self, config: QuantizationConfig) -> Path:
        path = self.model_path(config)
        if not path.is_file():
            source, _ = self.source(config)
            backend = get_backend(config.backend)
            backend.quantize(
                source, config, path, workdir=path.parent,
                calibration=backend.data_to_quantize_with(self.calibration, self.evaluation),
                progress=self.progress, loaded=self.loaded, qat=self.spec.qat, state_dir=path.parent,
            )
        return path

    def run(self, config: QuantizationConfig, hint: PruneHint) -> TrialOutcome:
        path = self.quantize(config)
        size = model_size_bytes(path)
        latency, note, slower = self._time_trial(path, hint)
        if slower:
            return TrialOutcome("pruned", None, latency, size, str(path), note=note)
        metric, why = self._score(path, hint)
        if metric is None:
            return TrialOutcome("pruned", None, latency, size, str(path), note="; ".join((note, why or "")))
        return TrialOutcome("ok", metric, latency, size, str(path), note=note)

    def _time_trial(self, path: Path, hint: PruneHint) -> tuple[float, str, bool]:
        """(median ms, note, separably slower than the best so far): the candidate timed interleaved with
        FP32 and, once a candidate passed, with the best one; rounds are added until the candidate is
        separable from the best (from FP32 when there is no best yet) or the budget is spent."""
        paths: dict[str, Any] = {"fp32": self.fp32.path, "candidate": path}
        best = hint.best_model_path
        if best and Path(best).is_file() and Path(best) != path:
            paths["best"] = best
            done = done_when_separable("candidate", "best")
        else:
            done = done_when_separable("candidate", "fp32", 0.0)
        rounds = self._time(paths, done)
        latency = rounds.median_ms("candidate")
        note = f"vs FP32 {rounds.ratio('candidate', 'fp32').describe()}"
        if "best" in paths:
            vs_best = rounds.ratio("candidate", "best")
            if separable(vs_best) and vs_best.low > 1:
                return latency, f"pruned: separably slower than the best so far ({vs_best.describe()} of its latency)", True
            note += f"; vs best so far {vs_best.describe()}" + ("" if separable(vs_best) else ": inseparable, not pruned")
        return latency, note, False

    def sensitivity(self, config: QuantizationConfig) -> list[tuple[str, float]]:
        samples = self.spec.tuning.fallback.samples if self.spec.tuning else 32
        data = self.evaluation.select(min(samples, len(self.evaluation)))
        return node_sensitivity(self.fp32.path, self.quantize(config), data, config.op_types, self.workdir,
                                weights_only_matmul=config.weights_only_matmul, exclude=config.nodes_to_exclude)


# ------------------------------------------------------------------ the worker's part (cluster executors)
@dataclass
class RemoteScore:
    """What a worker sends back for one trial: the accuracy verdict and the quantized model's files."""

    status: str  # "ok" | "pruned"
    metric: float | None
    size_bytes: int
    model_name: str
    files: dict[str, bytes] = field(repr=False, default_factory=dict)
    note: str | None = None


#: Per worker process: the runner built for the last payload (a process serves one search at a time).
_BUILT: dict[str, OnnxTrialRunner] = {}


@dataclass
class WorkerTrialRunner:
    """Everything a worker needs to quantize and score candidates of one search (picklable)."""

    spec: Any
    task: Any
    evaluation: Any
    calibration: Any
    vocab_size: int
    fp32_predictions: Any
    #: Graph files by content digest; ``fp32`` and each ``sources`` entry name one of them.
    graphs: dict[str, dict[str, bytes]] = field(repr=False)
    fp32: tuple[str, Any] = ("", None)  # (digest, ExportedModel with a bare file name as path)
    sources: dict[str, tuple[str, Any, dict[str, Any]]] = field(default_factory=dict)
    threads: int = 1
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    @classmethod
    def from_runner(cls, runner: OnnxTrialRunner, keys: dict[str, Any], threads: int) -> WorkerTrialRunner:
        """Ship ``runner``'s FP32 graph and the sources of ``keys`` (``source key -> config``)."""
        graphs: dict[str, dict[str, bytes]] = {}
        by_path: dict[str, str] = {}

        def ship(model: Any) -> tuple[str, Any]:
            where = str(Path(model.path).resolve())
            if where not in by_path:
                files = model_files(model.path)
                by_path[where] = files_digest(files)
                graphs[by_path[where]] = files
            return by_path[where], replace(model, path=Path(model.path).name)

        fp32 = ship(runner.fp32)
        sources = {}
        for key, config in keys.items():
            model, section = runner.source(config)
            digest, shipped = ship(model)
            sources[key] = (digest, shipped, section)
        spec = runner.spec.model_copy(update={
            "evaluation": runner.spec.evaluation.model_copy(update={"shards": None}),  # a worker scores whole
        })
        return cls(spec, runner.task, runner.evaluation, runner.calibration, runner.vocab_size,
                   runner.fp32_predictions, graphs, fp32, sources, threads)

    def _runner(self) -> OnnxTrialRunner:
        if self.token in _BUILT:
            return _BUILT[self.token]
        root = cache_root()
        for digest, files in self.graphs.items():
            write_files(root / digest, files)

        def local(digest: str, model: Any) -> Any:
            return replace(model, path=root / digest / Path(model.path).name)

        runner = OnnxTrialRunner(self.spec, local(*self.fp32), self.evaluation, self.calibration,
                                 root / f"work-{os.getpid()}", vocab_size=self.vocab_size, task=self.task)
        runner.fp32_predictions = self.fp32_predictions
        runner.score_threads = self.threads
        runner.optimized = {key: (local(digest, model), section) for key, (digest, model, section) in self.sources.items()}
        runner.remote_only = True
        _BUILT.clear()
        _BUILT[self.token] = runner
        return runner

    def run_remote(self, config: Any, hint: Any) -> RemoteScore:
        """Quantize ``config`` and score it (stopping early when it cannot reach ``hint``); no timing here."""
        runner = self._runner()
        folder = runner.model_path(config).parent
        shutil.rmtree(folder, ignore_errors=True)  # never reuse what a killed attempt half wrote
        try:
            path = runner.quantize(config)
            metric, why = runner.score(path, hint)
            files = model_files(path)
            size = model_size_bytes(path)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        status = "ok" if metric is not None else "pruned"
        return RemoteScore(status, metric, size, path.name, files, note=why)


def _with_outputs(path: Path, names: list[str], dst: Path) -> Path:
    import onnx

    model = onnx.load(str(path))
    existing = {o.name for o in model.graph.output}
    for name in names:
        if name not in existing:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    onnx.save(model, str(dst))
    return dst


def node_sensitivity(
    fp32_path: Path, quantized_path: Path, data: TextDataset, op_types: list[str], workdir: Path, *,
    weights_only_matmul: bool = False, exclude: list[str] | tuple[str, ...] = (),
) -> list[tuple[str, float]]:
    """Rank the FP32 graph's quantizable nodes by the error their quantization adds.

    For every node of ``op_types`` that the config quantizes (not in ``exclude``; with
    ``weights_only_matmul``, only MatMuls whose second input is a weight) and whose tensors exist
    in both graphs, the score is the normalised MSE of its output (quantized vs FP32, same
    inputs) minus that of its worst activation input: the error this node adds on top of what
    reached it. Most sensitive first. Node names are those of ONNX Runtime's pre-processed graph,
    which the backend quantizes, so they can go straight into ``nodes_to_exclude``.
    """
    import onnx
    import onnxruntime as ort

    from ..backends.onnxruntime import preprocess

    work = workdir / "sensitivity"
    work.mkdir(parents=True, exist_ok=True)
    pre = preprocess(fp32_path, work / "preprocessed.onnx")
    ref_graph = onnx.load(str(pre), load_external_data=False).graph
    q_graph = onnx.load(str(quantized_path), load_external_data=False).graph
    inits = {i.name for i in ref_graph.initializer}
    q_tensors = {t for n in q_graph.node for t in (*n.input, *n.output)}
    skip = set(exclude)
    nodes: list[tuple[str, list[str], str]] = []
    for node in ref_graph.node:
        if node.op_type not in op_types or not node.name or node.name in skip:
            continue
        if weights_only_matmul and node.op_type == "MatMul" and (len(node.input) < 2 or node.input[1] not in inits):
            continue  # activation x activation: left in FP32 by this config, nothing to fall back
        acts = [t for t in node.input if t and t not in inits and t in q_tensors]
        if node.output[0] in q_tensors:
            nodes.append((node.name, acts, node.output[0]))
    if not nodes:
        return []
    tensors = sorted({t for _, ins, o in nodes for t in (*ins, o)})
    ref = ort.InferenceSession(str(_with_outputs(pre, tensors, work / "ref.onnx")), providers=["CPUExecutionProvider"])
    qnt = ort.InferenceSession(str(_with_outputs(quantized_path, tensors, work / "q.onnx")),
                               providers=["CPUExecutionProvider"])
    names = [i.name for i in ref.get_inputs()]
    err: dict[str, list[float]] = {t: [0.0, 0.0] for t in tensors}  # sum sq diff, sum sq ref
    for batch in data.batches(8, names):
        r_out = dict(zip([o.name for o in ref.get_outputs()], ref.run(None, batch)))
        q_out = dict(zip([o.name for o in qnt.get_outputs()], qnt.run(None, batch)))
        for t in tensors:
            if t in r_out and t in q_out and r_out[t].shape == q_out[t].shape:
                a, b = r_out[t].astype(np.float64), q_out[t].astype(np.float64)
                err[t][0] += float(np.sum((a - b) ** 2))
                err[t][1] += float(np.sum(a**2))

    def nmse(t: str | None) -> float:
        if t is None or err[t][1] == 0:
            return 0.0
        return err[t][0] / err[t][1]

    scores = [(name, nmse(out) - max((nmse(i) for i in ins), default=0.0)) for name, ins, out in nodes]
    scores.sort(key=lambda x: -x[1])
    logger.info("most sensitive nodes: %s", scores[:5])
    return scores
