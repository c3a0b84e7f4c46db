"""The part of a trial that runs on a worker of a cluster executor (quantize and score), and what
goes there once per search (graphs as bytes, data, spec, task).

:meth:`OnnxTrialRunner.for_workers` builds a :class:`WorkerTrialRunner`; the executor puts it in
the object store once; on each node the graphs are written once to a node-local folder
(``$QUANTKIT_RAY_CACHE`` or the temp folder, ``quantkit-ray/<sha256>/``) and each worker process
builds one :class:`~quantkit.search.runner.OnnxTrialRunner` from it. A trial returns a
:class:`RemoteScore` (metric, size, the quantized graph's files); the driver writes the files where
its runner keeps trial models and times the candidate itself.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .runner import OnnxTrialRunner

logger = logging.getLogger(__name__)

__all__ = ["WorkerTrialRunner", "RemoteScore", "model_files", "write_files"]


def model_files(path: str | Path) -> dict[str, bytes]:
    """An ONNX model's file and the external-data files its initializers name, by file name."""
    import onnx

    path = Path(path)
    names = {path.name}
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            names.update(e.value for e in tensor.external_data if e.key == "location")
    return {name: (path.parent / name).read_bytes() for name in sorted(names)}


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` into ``folder`` atomically: a folder that exists is complete (first writer wins)."""
    if folder.is_dir():
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        try:
            os.rename(tmp, folder)
        except OSError:  # another worker of this node got there first
            if not folder.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _digest(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name, data in sorted(files.items()):
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()[:24]


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
_BUILT: dict[str, "OnnxTrialRunner"] = {}


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
    def from_runner(cls, runner: "OnnxTrialRunner", keys: dict[str, Any], threads: int) -> "WorkerTrialRunner":
        """Ship ``runner``'s FP32 graph and the sources of ``keys`` (``source key -> config``)."""
        graphs: dict[str, dict[str, bytes]] = {}
        by_path: dict[str, str] = {}

        def ship(model: Any) -> tuple[str, Any]:
            where = str(Path(model.path).resolve())
            if where not in by_path:
                files = model_files(model.path)
                by_path[where] = _digest(files)
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

    def _root(self) -> Path:
        return Path(os.environ.get("QUANTKIT_RAY_CACHE") or tempfile.gettempdir()) / "quantkit-ray"

    def _runner(self) -> "OnnxTrialRunner":
        if self.token in _BUILT:
            return _BUILT[self.token]
        from .runner import OnnxTrialRunner

        root = self._root()
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
        from ..graph import model_size_bytes

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
