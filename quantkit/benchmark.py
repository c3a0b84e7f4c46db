"""Benchmark: latency, throughput, peak memory and load time of ONNX models across input shapes.

A model is an artifact folder (``model.onnx`` + ``config.json``, optionally an FP32 baseline in
``fp32/model.onnx``), a plain ONNX folder such as an Optimum export, a direct path to a ``.onnx`` file,
or a Hub repo id (downloaded with :func:`quantkit.hub.resolve_artifact`).

Every model × (batch, sequence length) is timed with :mod:`quantkit.latency`: a fresh process per
measurement, the models of one shape interleaved round by round (order rotated each round); each row's
measurement (:class:`~quantkit.latency.RuntimeStats`) is that of its median round. Each quantized row is compared with the FP32 baseline of its own
folder at the same shape: ``vs_fp32`` is the median of the per-round int8 p50 / FP32 p50 ratios, with its
interval (``vs_fp32_low``-``vs_fp32_high``) and a "timings unreliable" warning when the rounds cannot
establish it.
"""

from __future__ import annotations

import json
import logging
import numbers
import platform
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .artifacts import MODEL_FILE
from .errors import ArtifactError, ArtifactNotFoundError, BenchmarkError
from .latency import RuntimeStats, SubprocessTimer, default_threads, measure, speedup_warning
from .spec import LatencySpec
from ._version import __version__
from .graph import model_size_bytes
from .hardware import cpu_info
from .hub import resolve_artifact

logger = logging.getLogger(__name__)

__all__ = [
    "FP32_DIR",
    "RESULT_FILE",
    "PLOT_FILE",
    "BenchmarkModel",
    "BenchmarkRow",
    "BenchmarkResult",
    "benchmark",
    "resolve_models",
]

#: Sub-folder of an artifact folder holding the FP32 baseline (``output.keep_fp32: true``).
FP32_DIR = "fp32"
RESULT_FILE = "benchmark.json"
PLOT_FILE = "benchmark.png"

#: Operators whose presence makes a graph "int8" rather than "fp32".
_QUANT_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
    "QLinearMatMul", "QLinearConv", "QLinearAdd", "QLinearMul", "QGemm", "QAttention", "QEmbedLayerNormalization",
    "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "DynamicQuantizeLSTM",
})
#: Models whose position ids start after the padding index, so they take ``max_position_embeddings
#: - pad_token_id - 1`` tokens at most (RoBERTa: 514 - 1 - 1 = 512).
_PADDING_OFFSET_POSITIONS = frozenset({
    "roberta", "xlm-roberta", "camembert", "roberta-prelayernorm", "data2vec-text", "xmod", "mpnet",
})
#: Input ids are drawn from [1, 2) (all ones) when no vocabulary size can be found.
_FALLBACK_VOCAB = 2


@dataclass(frozen=True)
class BenchmarkModel:
    """One ONNX model to time: its label, file, precision and limits."""

    label: str
    source: str  # what was passed (folder, file or Hub repo id)
    path: Path  # the .onnx file
    precision: str  # "int8" or "fp32"
    baseline: str | None = None  # label of the FP32 baseline from the same folder
    vocab_size: int | None = None
    max_sequence_length: int | None = None
    limit_note: str | None = None  # where max_sequence_length comes from
    size_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


#: The fields of a row's measurement (:class:`~quantkit.latency.RuntimeStats`) that ``benchmark.json`` holds, in
#: its column order; the busy-CPU diagnostics stay in ``row.stats`` only.
_MEASURED = ("batch_size", "sequence_length", "threads", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput",
             "peak_rss_mb", "model_rss_mb", "load_s")


@dataclass
class BenchmarkRow:
    """Timing of one model at one shape: its measurement (``row.p50_ms`` etc. read it) and how it compares
    with its FP32 baseline."""

    model: str
    path: str
    precision: str
    stats: RuntimeStats  # the median round's measurement
    baseline: str | None = None  # the FP32 row this one is compared with
    vs_fp32: float | None = None  # median of per-round p50 / baseline p50 (1.0 for the baseline itself)
    vs_fp32_low: float | None = None  # interval of that median over the rounds (quantkit.latency.ratio_estimate)
    vs_fp32_high: float | None = None
    timing_warning: str | None = None  # "timings unreliable: ..." when the rounds cannot establish the ratio

    def __getattr__(self, name: str) -> Any:
        if name in _MEASURED:  # batch_size, p50_ms, ...: the measurement's
            return getattr(self.stats, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "path": self.path, "precision": self.precision,
                **{k: getattr(self.stats, k) for k in _MEASURED}, "baseline": self.baseline, "vs_fp32": self.vs_fp32,
                "vs_fp32_low": self.vs_fp32_low, "vs_fp32_high": self.vs_fp32_high,
                "timing_warning": self.timing_warning}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchmarkRow:
        """A row back from its :meth:`to_dict` (unknown keys are ignored)."""
        keys = {f.name for f in fields(cls)} - {"stats"}
        return cls(stats=RuntimeStats(**{k: data[k] for k in _MEASURED}),
                   **{k: v for k, v in data.items() if k in keys})


@dataclass
class BenchmarkResult:
    """Rows for every model × shape, the settings and the machine; writes JSON and a plot."""

    rows: list[BenchmarkRow]
    models: list[BenchmarkModel]
    settings: dict[str, Any]
    environment: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    json_path: Path | None = None
    plot_path: Path | None = None

    def row(self, model: str, batch_size: int, sequence_length: int) -> BenchmarkRow:
        for r in self.rows:
            if (r.model, r.batch_size, r.sequence_length) == (model, batch_size, sequence_length):
                return r
        raise KeyError(f"no row for {model!r} at batch {batch_size} × seq {sequence_length}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "settings": dict(self.settings),
            "environment": dict(self.environment),
            "models": [m.to_dict() for m in self.models],
            "rows": [r.to_dict() for r in self.rows],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchmarkResult:
        model_keys = {f.name for f in fields(BenchmarkModel)}
        models = [BenchmarkModel(**{**{k: v for k, v in m.items() if k in model_keys}, "path": Path(m["path"])})
                  for m in data["models"]]
        rows = [BenchmarkRow.from_dict(r) for r in data["rows"]]
        return cls(rows=rows, models=models, settings=data.get("settings", {}),
                   environment=data.get("environment", {}), created=data.get("created", ""))

    @classmethod
    def load(cls, path: str | Path) -> BenchmarkResult:
        """Read a ``benchmark.json`` written by :meth:`write_json`."""
        result = cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        result.json_path = Path(path)
        return result

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        try:
            path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise ArtifactError(f"cannot write {path}: {exc}") from exc
        self.json_path = path
        return path

    def plot(self, path: str | Path, *, log_y: bool = False) -> Path:
        """p50 latency vs sequence length: one line per model × batch size (color: model, style: batch)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        styles = ["-", "--", ":", "-."]
        markers = ["o", "s", "^", "D", "v", "P"]
        batches = sorted({r.batch_size for r in self.rows})
        for mi, model in enumerate(m.label for m in self.models):
            for bi, batch in enumerate(batches):
                pts = sorted((r.sequence_length, r.p50_ms) for r in self.rows
                             if r.model == model and r.batch_size == batch)
                if not pts:
                    continue
                ax.plot([p[0] for p in pts], [p[1] for p in pts], color=colors[mi % len(colors)],
                        linestyle=styles[bi % len(styles)], marker=markers[bi % len(markers)],
                        label=f"{model} · batch {batch}")
        seqs = sorted({r.sequence_length for r in self.rows})
        ax.set_xticks(seqs)
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel("sequence length (tokens)")
        ax.set_ylabel("p50 latency (ms)" + (", log scale" if log_y else ""))
        cpu = self.environment.get("cpu", {}).get("model", "")
        title = f"quantkit benchmark: p50 latency · {self.settings.get('threads')} thread(s)"
        ax.set_title(title + (f" · {cpu}" if cpu else ""), fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        path = Path(path)
        try:
            fig.savefig(path)
        except OSError as exc:
            raise ArtifactError(f"cannot write {path}: {exc}") from exc
        finally:
            plt.close(fig)
        self.plot_path = path
        return path


# --------------------------------------------------------------------------- resolving models
def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactNotFoundError(f"{path} is not readable JSON: {exc}") from exc
    return data if isinstance(data, dict) else {}


def _limits(config: dict[str, Any], config_path: Path) -> tuple[int | None, int | None, str | None]:
    """(vocab size, longest sequence, where the limit comes from) from a transformers config."""
    vocab = config.get("vocab_size")
    vocab = int(vocab) if isinstance(vocab, int) and vocab > 0 else None
    for key in ("max_position_embeddings", "n_positions"):
        limit = config.get(key)
        if isinstance(limit, int) and limit > 0:
            break
    else:
        return vocab, None, None
    note = f"{key} = {limit} in {config_path}"
    pad = config.get("pad_token_id")
    if config.get("model_type") in _PADDING_OFFSET_POSITIONS and isinstance(pad, int) and 0 <= pad < limit - 1:
        limit -= pad + 1
        note += f", minus the padding offset {pad + 1} of {config['model_type']} position ids"
    return vocab, limit, note


def _onnx_facts(path: Path) -> tuple[str, int | None]:
    """(precision, vocab size read from the embedding Gather fed by ``input_ids``) of an ONNX graph."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError and others
        raise ArtifactNotFoundError(f"{path} is not a readable ONNX model: {exc}") from exc
    graph = model.graph
    precision = "int8" if any(n.op_type in _QUANT_OPS for n in graph.node) else "fp32"
    inits = {t.name: list(t.dims) for t in graph.initializer}
    producers = {out: n for n in graph.node for out in n.output}
    vocab = None
    for node in graph.node:
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[1] == "input_ids":
            data = node.input[0]
            if data not in inits and data in producers and producers[data].op_type == "DequantizeLinear":
                data = producers[data].input[0]
            if inits.get(data):
                vocab = int(inits[data][0])
                break
    return precision, vocab


def _locate(source: str | Path) -> tuple[Path, bool, str, str]:
    """(the .onnx file or the folder, is a direct file, label, parent name to disambiguate the label)."""
    text = str(source)
    local = Path(text).expanduser()
    if local.is_file():
        if local.suffix.lower() != ".onnx":
            raise ArtifactNotFoundError(
                f"{local} is a file but not an .onnx model",
                hint="pass an artifact folder, an ONNX export folder, a .onnx file or a Hub repo id",
            )
        local = local.resolve()
        named = local.parent if local.stem == "model" else local  # .../int8/model.onnx is "int8"
        return local, True, named.name if named.is_dir() else local.stem, named.parent.name
    if local.is_dir():
        if not (local / MODEL_FILE).is_file():
            others = sorted(p.name for p in local.glob("*.onnx"))
            raise ArtifactNotFoundError(
                f"{local} has no {MODEL_FILE}: not an artifact folder or ONNX export"
                + (f" (it holds {', '.join(others)})" if others else ""),
                hint="pass the folder written by `quantkit quantize` / `tune`, an Optimum ONNX export, "
                "or the path of a .onnx file",
            )
        local = local.resolve()
        return local, False, local.name, local.parent.name

    return resolve_artifact(text), False, text, ""


def _unique(names: list[str], parents: list[str]) -> list[str]:
    """Disambiguate equal labels with their parent folder's name, then with ``#1``, ``#2``, ..."""
    counts = Counter(names)
    labels = [f"{p}/{n}" if counts[n] > 1 and p else n for n, p in zip(names, parents)]
    counts, seen, out = Counter(labels), Counter(), []
    for label in labels:
        seen[label] += 1
        out.append(label if counts[label] == 1 else f"{label} #{seen[label]}")
    return out


def _describe(label: str, source: str, path: Path, config_dir: Path, baseline: str | None) -> BenchmarkModel:

    precision, onnx_vocab = _onnx_facts(path)
    config = _read_config(config_dir)
    vocab, limit, note = _limits(config, config_dir / "config.json")
    return BenchmarkModel(label=label, source=source, path=path, precision=precision, baseline=baseline,
                          vocab_size=vocab or onnx_vocab, max_sequence_length=limit, limit_note=note,
                          size_bytes=model_size_bytes(path))


def resolve_models(models: Sequence[str | Path], *, include_fp32: bool = True) -> list[BenchmarkModel]:
    """The ONNX files to time for ``models``, each folder's FP32 baseline right after its model."""
    if not models:
        raise BenchmarkError("no model to benchmark", hint="pass at least one artifact folder, .onnx file or Hub id")
    located = [_locate(m) for m in models]
    labels = _unique([loc[2] for loc in located], [loc[3] for loc in located])
    out: list[BenchmarkModel] = []
    for source, (path, is_file, _, _), label in zip(models, located, labels):
        folder = path.parent if is_file else path
        onnx_path = path if is_file else path / MODEL_FILE
        fp32 = folder / FP32_DIR / MODEL_FILE
        has_fp32 = include_fp32 and not is_file and fp32.is_file()
        fp32_label = f"{label} (fp32)" if has_fp32 else None
        out.append(_describe(label, str(source), onnx_path, folder, fp32_label))
        if has_fp32:
            config_dir = fp32.parent if (fp32.parent / "config.json").is_file() else folder
            out.append(_describe(fp32_label, str(source), fp32, config_dir, None))
    return out


# --------------------------------------------------------------------------- measuring
def _positive_ints(name: str, values: Sequence[int]) -> list[int]:
    values = list(values)
    if not values:
        raise BenchmarkError(f"no {name} given")
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1]
    if bad:
        raise BenchmarkError(f"{name} must be positive integers, got {', '.join(map(repr, bad))}")
    return list(dict.fromkeys(int(v) for v in values))  # unique, in the given order


def _check_settings(threads: int | None, warmup: int, repeats: int, rounds: int) -> None:
    if threads is not None and threads < 1:
        raise BenchmarkError(f"threads must be at least 1, got {threads}")
    if warmup < 0:
        raise BenchmarkError(f"warmup must be 0 or more, got {warmup}")
    if repeats < 3:
        raise BenchmarkError(f"repeats must be at least 3 (for p50/p90/p99), got {repeats}")
    if not 1 <= rounds <= 10:
        raise BenchmarkError(f"rounds must be between 1 and 10, got {rounds}")


def _environment() -> dict[str, Any]:
    from importlib import metadata


    try:
        ort_version = metadata.version("onnxruntime")
    except metadata.PackageNotFoundError:  # pragma: no cover
        ort_version = None
    return {"cpu": cpu_info().to_dict(), "python": platform.python_version(), "quantkit": __version__,
            "onnxruntime": ort_version}


def benchmark(
    models: Sequence[str | Path],
    *,
    batch_sizes: Sequence[int] = (1, 8),
    sequence_lengths: Sequence[int] = (32, 128, 256),
    threads: int | None = None,
    warmup: int = 5,
    repeats: int = 30,
    rounds: int = 3,
    include_fp32: bool = True,
    output_dir: str | Path | None = None,
    log_y: bool = False,
) -> BenchmarkResult:
    """Time every model at every (batch size, sequence length).

    ``models``: artifact folders (their ``fp32/model.onnx`` baseline is timed too unless
    ``include_fp32=False``), ONNX export folders, ``.onnx`` files or Hub repo ids. With ``output_dir``,
    ``benchmark.json`` and ``benchmark.png`` are written there (replacing earlier ones).

    Raises :class:`~quantkit.errors.BenchmarkError` for settings that cannot run (a sequence length above
    a model's ``max_position_embeddings``, non-positive sizes), before anything is measured.
    """
    batches = _positive_ints("batch sizes", batch_sizes)
    seqs = _positive_ints("sequence lengths", sequence_lengths)
    _check_settings(threads, warmup, repeats, rounds)
    targets = resolve_models(models, include_fp32=include_fp32)
    for target in targets:
        too_long = [s for s in seqs if target.max_sequence_length is not None and s > target.max_sequence_length]
        if too_long:
            raise BenchmarkError(
                f"sequence length {max(too_long)} is above the limit of {target.label}: "
                f"{target.max_sequence_length} tokens ({target.limit_note})",
                hint=f"use --seq values of at most {target.max_sequence_length}",
            )
    known = [t.vocab_size for t in targets if t.vocab_size]
    vocab = min(known) if known else _FALLBACK_VOCAB
    if len(known) < len(targets):
        logger.warning("no vocabulary size for %s (no config.json): input ids are drawn from [1, %d)",
                       ", ".join(t.label for t in targets if not t.vocab_size), vocab)
    out_dir = None
    if output_dir is not None:
        out_dir = Path(output_dir).expanduser().resolve()
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArtifactError(f"cannot create the output folder {out_dir}: {exc}") from exc
    threads = threads or default_threads()
    paths = {t.label: t.path for t in targets}
    shapes = [(b, s) for b in batches for s in seqs]
    logger.info("benchmarking %d model(s) at %d shape(s), %d thread(s), %d round(s)", len(targets), len(shapes),
                threads, rounds)
    stats: dict[tuple[str, int, int], Any] = {}
    ratios: dict[tuple[str, int, int], Any] = {}
    start = time.perf_counter()
    for i, (batch, seq) in enumerate(shapes, 1):
        latency = LatencySpec(batch_size=batch, sequence_length=seq, warmup=warmup, repeats=repeats, rounds=rounds,
                              threads=threads)
        logger.info("[%d/%d] batch %d × seq %d", i, len(shapes), batch, seq)
        timer = SubprocessTimer(latency, sequence_length=seq, vocab_size=vocab)
        timed = measure(paths, timer, min_rounds=rounds)  # interleaved, order rotated per round
        for label in paths:
            stats[(label, batch, seq)] = timer.median_stats(label)
        for t in targets:
            if t.baseline is not None:
                est = timed.ratio(t.label, t.baseline)
                ratios[(t.label, batch, seq)] = (est, speedup_warning(est, f"{t.label} / {t.baseline}"))
    rows = []
    for batch, seq in shapes:
        for t in targets:
            st = stats[(t.label, batch, seq)]
            ratio = low = high = warning = None
            if t.baseline is not None:
                est, warning = ratios[(t.label, batch, seq)]
                ratio, low, high = est.median, est.low, est.high
            elif any(o.baseline == t.label for o in targets):
                ratio = 1.0
            rows.append(BenchmarkRow(
                model=t.label, path=str(t.path), precision=t.precision, stats=st, baseline=t.baseline, vs_fp32=ratio,
                vs_fp32_low=low, vs_fp32_high=high, timing_warning=warning,
            ))
    settings = {"batch_sizes": batches, "sequence_lengths": seqs, "threads": threads, "warmup": warmup,
                "repeats": repeats, "rounds": rounds, "include_fp32": include_fp32, "vocab_size": vocab,
                "elapsed_s": round(time.perf_counter() - start, 3)}
    result = BenchmarkResult(rows=rows, models=targets, settings=settings, environment=_environment(),
                             created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    if out_dir is not None:
        result.write_json(out_dir / RESULT_FILE)
        result.plot(out_dir / PLOT_FILE, log_y=log_y)
        logger.info("wrote %s and %s", result.json_path, result.plot_path)
    return result
