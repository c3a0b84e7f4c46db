"""Run a quantkit artifact without optimum-onnx: tokenizer + ONNX Runtime session + the task's post-processing.

>>> from quantkit.runtime import load
>>> clf = load("out/minilm-dynamic")                   # an artifact folder, or a Hub repo id
>>> clf(["WIN a FREE prize now!!!", "Lunch at noon?"])  # doctest: +SKIP
[{'label': 'spam', 'score': 0.99...}, {'label': 'ham', 'score': 0.98...}]

What a call returns is what the task's ``transformers.pipeline`` returns, per example (one example in,
one result out; a list in, a list out):

- text-classification: ``{"label", "score"}`` (``top_k=None``: every label, best first); inputs are texts,
  ``(text, text_pair)`` tuples or ``{"text", "text_pair"}`` dicts;
- token-classification: entity spans ``{"entity_group", "score", "word", "start", "end"}`` (simple
  aggregation); ``words=[...]`` tags pre-split words instead (``{"word", "entity", "score"}`` per word);
- feature-extraction: the sentence embedding, pooled (and normalised) as the artifact's task says
  (``[hidden]`` for a text, ``[n, hidden]`` for a list);
- question-answering: ``{"answer", "score", "start", "end"}`` from ``question=`` / ``context=`` (or dicts);
- text-generation: ``{"generated_text"}`` (prompt + continuation) per prompt; :meth:`Runtime.generate` returns
  the continuation with its speed, :meth:`Runtime.stream` yields it piece by piece (:mod:`quantkit.generation`).

Inputs are tokenized in batches of ``batch_size`` examples, truncated to ``max_length`` tokens and padded
to the longest of the batch; ONNX Runtime runs on ``threads`` intra-op threads (default: the physical
cores). This module imports tokenizers/transformers' ``AutoTokenizer`` and ``AutoConfig`` and
onnxruntime, nothing from optimum.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ArtifactNotFoundError, EvaluationError
from .feeds import is_past

logger = logging.getLogger(__name__)

__all__ = ["Runtime", "load"]

_MODEL_FILE = "model.onnx"
#: ``precision`` → the graph a :class:`Runtime` runs, relative to the artifact folder.
PRECISIONS = {"int8": _MODEL_FILE, "fp32": "fp32/" + _MODEL_FILE}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError) as exc:
        logger.warning("cannot read %s: %s", path, exc)
        return {}


def _task_options(folder: Path) -> Any:
    """The artifact's ``task_options`` (pooling, QA windows, ...) from its ``quantkit_spec.yaml``."""
    from .spec import TaskOptionsSpec

    spec = folder / "quantkit_spec.yaml"
    if not spec.is_file():
        return TaskOptionsSpec()
    from .specio import read_yaml  # the only reader of spec files (a downloaded one may be hostile)

    try:
        raw = read_yaml(spec) or {}
        return TaskOptionsSpec(**(raw.get("task_options") or {}))
    except Exception as exc:  # noqa: BLE001 - an edited spec: fall back to the defaults, say so
        logger.warning("%s: cannot read task_options (%s); using the defaults", spec, exc)
        return TaskOptionsSpec()


class Runtime:
    """A loaded artifact: call it like the task's ``transformers.pipeline`` (see the module docstring)."""

    def __init__(self, folder: str | Path, *, task: str | None = None, threads: int | None = None,
                 max_length: int | None = None, precision: str = "int8") -> None:
        import onnxruntime as ort
        from transformers import AutoConfig, AutoTokenizer

        from .latency import default_threads
        from .tasks import infer_task_from_architectures, task_for

        self.folder = Path(folder)
        if not (self.folder / _MODEL_FILE).is_file():
            raise ArtifactNotFoundError(f"{self.folder} has no {_MODEL_FILE}: not a quantkit artifact folder")
        if precision not in PRECISIONS:
            raise ValueError(f"precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
        #: The graph this runtime runs: the quantized model, or the artifact's FP32 baseline (``fp32/model.onnx``).
        self.model_path = self.folder / PRECISIONS[precision]
        if not self.model_path.is_file():
            raise ArtifactNotFoundError(
                f"{self.folder} has no FP32 baseline ({PRECISIONS[precision]})",
                hint="quantize with output.keep_fp32: true to keep it (a Hub push includes it with --include-fp32)")
        self.config = AutoConfig.from_pretrained(self.folder)
        report = _read_json(self.folder / "quantkit_report.json")
        name = task or (report.get("task") or {}).get("name") or (report.get("model") or {}).get("task") \
            or infer_task_from_architectures(self.config)
        if name is None:
            raise ArtifactNotFoundError(f"{self.folder}: cannot tell the task (no quantkit_report.json and no "
                                        "known architecture in config.json)", hint="pass task=...")
        self.task = task_for(name, self.config, _task_options(self.folder), self.folder)
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        self.threads = int(threads or default_threads())
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.model_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises its own types
            raise EvaluationError(f"ONNX Runtime cannot load {self.model_path}: {exc}") from exc
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        missing = [n for n in self.task.output_names if n not in self.output_names]
        if missing:
            raise EvaluationError(f"{self.model_path} has outputs {self.output_names}; {self.task.name} "
                                  f"needs {missing}")
        self.max_length = int(max_length or self._default_max_length())

    def _default_max_length(self) -> int:
        limits = [getattr(self.tokenizer, "model_max_length", None),
                  getattr(self.config, "max_position_embeddings", None)]
        usable = [int(x) for x in limits if isinstance(x, int) and 0 < x < 10**6]
        return min(usable) if usable else 512

    def __repr__(self) -> str:
        return f"Runtime({str(self.folder)!r}, task={self.task.name!r}, threads={self.threads})"

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The graph's outputs by name for token feeds (extra feeds the graph does not take are dropped)."""
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise EvaluationError(f"the model needs inputs {missing}; got {sorted(feeds)}")
        cast = {n: np.ascontiguousarray(feeds[n], dtype=np.float32 if is_past(n) else np.int64)
                for n in self.input_names}
        return dict(zip(self.output_names, self.session.run(None, cast)))

    # ------------------------------------------------------------------ text generation
    def generator(self) -> Any:
        """The :class:`~quantkit.generation.Generator` of this artifact (a text-generation graph with its cache)."""
        from .generation import Generator

        if not getattr(self.task, "kv_cache", False):
            raise TypeError(f"{self.task.name} artifacts do not generate; call the runtime like a pipeline")
        eos = getattr(self.config, "eos_token_id", None)
        return Generator(self.session, self.tokenizer, eos if isinstance(eos, list) else [eos] if eos is not None
                         else [])

    def generate(self, prompt: str, *, max_new_tokens: int = 64, do_sample: bool = False, temperature: float = 1.0,
                 top_k: int = 50, top_p: float = 1.0, seed: int | None = None, stop: Any = (),
                 details: bool = False) -> Any:
        """The continuation of ``prompt`` (greedy unless ``do_sample``); ``details=True`` returns the
        :class:`~quantkit.generation.Generated` record (token ids, stop reason, prefill and decode tokens/s)."""
        from .generation import GenerationConfig

        config = GenerationConfig(max_new_tokens, do_sample, temperature, top_k, top_p, seed,
                                  (stop,) if isinstance(stop, str) else tuple(stop))
        out = self.generator().generate(prompt, config)
        return out if details else out.text

    def stream(self, prompt: str, **options: Any) -> Any:
        """Yield the continuation of ``prompt`` piece by piece as tokens are generated (options as
        :meth:`generate`)."""
        from .generation import GenerationConfig

        stop = options.pop("stop", ())
        config = GenerationConfig(**options, stop=(stop,) if isinstance(stop, str) else tuple(stop))
        for piece, _ in self.generator().stream(prompt, config):
            if piece:
                yield piece

    def _run_trimmed(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch cut to its longest row (what a pipeline feeds one example at a time); sequence
        outputs are padded back to the feeds' width so batches concatenate."""
        mask = feeds.get("attention_mask")
        width = next(iter(feeds.values())).shape[1]
        longest = max(int(mask.sum(axis=1).max()), 1) if mask is not None and mask.size else width
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        cut = slice(width - longest, width) if left else slice(0, longest)
        outs = self.run({k: v[:, cut] for k, v in feeds.items()})
        for name, out in outs.items():
            axes = self.task.output_axes.get(name, {})
            if longest < width and out.ndim > 1 and "sequence" in str(axes.get(1, "")):
                pad = [(0, 0)] * out.ndim
                pad[1] = (width - longest, 0) if left else (0, width - longest)
                outs[name] = np.pad(out, pad)
        return outs

    def __call__(self, inputs: Any = None, /, *, batch_size: int = 8, **kwargs: Any) -> Any:
        """Run ``inputs`` (or the task's keyword inputs: ``question``/``context``, ``words``) in batches of
        ``batch_size`` examples; other keywords go to the task's post-processing (``top_k``)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if getattr(self.task, "kv_cache", False):  # a pipeline("text-generation") call: prompt + continuation
            prompts = [inputs] if isinstance(inputs, str) else list(inputs or [])
            results = [[{"generated_text": p + self.generate(p, **kwargs)}] for p in prompts]
            return results[0] if isinstance(inputs, str) else results
        call_keys = {"question", "context", "words"}
        examples, single = self.task.serve_examples(inputs, {k: v for k, v in kwargs.items() if k in call_keys})
        options = {k: v for k, v in kwargs.items() if k not in call_keys}
        results: list[Any] = []
        for start in range(0, len(examples), batch_size):
            batch = self.task.serve_encode(self.tokenizer, examples[start: start + batch_size],
                                           max_length=self.max_length)
            rows = len(next(iter(batch.feeds.values())))
            parts = [self._run_trimmed({k: v[i: i + batch_size] for k, v in batch.feeds.items()})
                     for i in range(0, rows, batch_size)]  # QA: one example can be several windows
            outputs = {name: np.concatenate([p[name] for p in parts]) for name in self.output_names}
            results.extend(self.task.serve_outputs(outputs, batch, self.tokenizer, **options))
        return self.task.serve_collect(results, single)


def load(folder_or_repo_id: str | Path, *, revision: str | None = None, token: str | None = None,
         cache_dir: str | Path | None = None, task: str | None = None, threads: int | None = None,
         max_length: int | None = None, precision: str = "int8") -> Runtime:
    """Load an artifact folder, or download a Hub repo quantkit pushed (``owner/name``), and return a
    :class:`Runtime` to call like a pipeline. ``precision="fp32"`` runs the artifact's FP32 baseline
    (``fp32/model.onnx``, kept with ``output.keep_fp32``) with the same tokenizer and post-processing."""
    from .hub import resolve_artifact

    folder = resolve_artifact(folder_or_repo_id, revision, token=token, cache_dir=cache_dir)
    return Runtime(folder, task=task, threads=threads, max_length=max_length, precision=precision)
