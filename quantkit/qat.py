"""Quantization-aware training: torch.export → torchao ``prepare_qat_pt2e`` (X86InductorQuantizer,
QAT config) → fine-tune → ``move_exported_model_to_eval`` → ``convert_pt2e``.

The loop: pre-tokenized batches through a DataLoader (worker processes), AdamW with linear
warm-up and decay, gradient clipping, glob-pattern freezing, early stopping on a held-out slice
of the *training* data, ``torch.inference_mode`` for evaluation, a progress bar with loss and
throughput, and a checkpoint every ``checkpoint_every`` steps so an interrupted run resumes.
Deterministic for a given seed.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .data import TextDataset
from .errors import QuantizationError
from .spec import EarlyStoppingSpec, QATSpec

logger = logging.getLogger(__name__)

__all__ = [
    "QATResult",
    "dynamic_shapes",
    "example_inputs",
    "forward_parameters",
    "input_names",
    "prepare_qat",
    "set_attention_dropout",
    "train_qat",
    "INPUT_ORDER",
]

INPUT_ORDER = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class QATResult:
    model: Any  # the converted (int8) GraphModule
    steps: int
    losses: list[float] = field(default_factory=list)
    holdout_accuracy: list[tuple[int, float]] = field(default_factory=list)
    stopped_early: bool = False
    resumed_from: int = 0
    seconds: float = 0.0


def forward_parameters(model: Any) -> list[str]:
    """The names of ``model.forward``'s parameters, in order (``self`` excluded)."""
    import inspect

    return [p.name for p in inspect.signature(model.forward).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def input_names(data: TextDataset, model: Any = None) -> list[str]:
    """The data's model inputs, as ``model.forward`` takes them positionally.

    torch.export and PT2E call the model with positional tensors. A tokenizer may produce an input the
    model does not take (a BERT tokenizer's ``token_type_ids`` next to a DistilBERT, MPNet or ModernBERT,
    whose third parameter is ``head_mask``, ``position_ids`` or ``sliding_window_mask``): such inputs are
    dropped (the ONNX export has no such input either), and the others ordered as ``forward`` lists them.
    """
    names = [n for n in INPUT_ORDER if n in data.inputs]
    if model is None:
        return names
    params = forward_parameters(model)
    dropped = [n for n in names if n not in params]
    if dropped:
        logger.info("%s.forward takes no %s: not passed to the model", type(model).__name__, ", ".join(dropped))
    names = sorted((n for n in names if n in params), key=params.index)
    if names != params[: len(names)]:
        raise QuantizationError(
            f"{type(model).__name__}.forward takes {params[: len(names) + 1]} first; the inputs {names} cannot be "
            "passed positionally to torch.export"
        )
    return names


def example_inputs(data: TextDataset, batch: int = 2, seq: int = 16,
                   names: list[str] | None = None) -> tuple[Any, ...]:
    """A small example batch (batch, seq ≥ 2 so torch.export does not specialise the dims)."""
    import torch

    names = names if names is not None else input_names(data)
    b = data.batch(0, batch, names)
    seq = min(seq, data.max_length)
    return tuple(torch.from_numpy(np.ascontiguousarray(b[n][:, :seq])) for n in names)


def dynamic_shapes(names: list[str], max_positions: int) -> dict[str, dict[int, Any]]:
    from torch.export import Dim

    batch = Dim("batch", min=1, max=4096)
    seq = Dim("sequence", min=2, max=max_positions)
    return {n: {0: batch, 1: seq} for n in names}


def _seed(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare_qat(model: Any, example: tuple[Any, ...], dyn: dict[str, Any]) -> Any:
    """Export ``model`` and insert fake-quant (torchao X86InductorQuantizer, QAT config)."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    class FloatOnlyX86InductorQuantizer(X86InductorQuantizer):
        """X86InductorQuantizer that never fake-quantizes an integer tensor.

        Its elementwise-``mul`` recipe annotates every same-shape ``aten.mul.Tensor``, integer ones included:
        RoBERTa, XLM-R and MPNet compute position ids as ``cumsum(mask) * mask`` on int32, DeBERTa-v2 its
        relative positions on int64, and QAT's fused fake-quant kernel only takes float ("expected scalar type
        Float but found Int"). Annotations of non-float inputs and outputs are dropped after annotation.
        """

        def annotate(self, model: Any) -> Any:
            model = super().annotate(model)
            for node in model.graph.nodes:
                annotation = node.meta.get("quantization_annotation")
                if annotation is None:
                    continue
                annotation.input_qspec_map = {n: q for n, q in annotation.input_qspec_map.items() if _is_float(n)}
                if annotation.output_qspec is not None and not _is_float(node):
                    annotation.output_qspec = None
            return model

    model.train()
    # Exported with grad disabled: a ``torch.no_grad()`` region of the model (ModernBERT's rotary embedding)
    # then needs no ``wrap_with_set_grad_enabled`` submodule, which would nest its ``autocast`` submodule and
    # break torchao's graph passes ("references nonexistent attribute submod_1"). The exported graph holds
    # plain aten ops, so autograd still trains it.
    with torch.no_grad():
        graph = torch.export.export(model, example, dynamic_shapes=dyn).module()
    quantizer = FloatOnlyX86InductorQuantizer()
    quantizer.set_global(get_default_x86_inductor_quantization_config(is_qat=True))
    return prepare_qat_pt2e(graph, quantizer)


def _is_float(node: Any) -> bool:
    """Whether an FX node's value is a floating-point tensor (unknown values count as float)."""
    val = getattr(node, "meta", {}).get("val")
    dtype = getattr(val, "dtype", None)
    return dtype is None or dtype.is_floating_point


def set_attention_dropout(graph: Any, p: float | dict[str, float]) -> dict[str, float]:
    """Set ``dropout_p`` of the scaled-dot-product-attention nodes; return the previous values.

    A model exported in train mode bakes attention dropout into the SDPA call, and torchao's
    ``move_exported_model_to_eval`` only rewrites ``aten.dropout`` nodes: without this the
    converted model (and its ONNX export) would drop attention weights at inference. ``p`` is
    one value for every node, or the mapping returned by an earlier call (to restore it).
    """
    import torch

    previous: dict[str, float] = {}
    for node in graph.graph.nodes:
        if node.op != "call_function" or node.target != torch.ops.aten.scaled_dot_product_attention.default:
            continue
        new = p.get(node.name, 0.0) if isinstance(p, dict) else p
        if "dropout_p" in node.kwargs:
            previous[node.name] = float(node.kwargs["dropout_p"])
            node.kwargs = {**node.kwargs, "dropout_p": new}
        elif len(node.args) > 4:
            previous[node.name] = float(node.args[4])
            node.args = (*node.args[:4], new, *node.args[5:])
    if previous:
        graph.recompile()
    return previous


def _freeze(model: Any, patterns: list[str], named: dict[str, str]) -> list[str]:
    """Freeze parameters whose original name matches a pattern; return the frozen names."""
    frozen = []
    for graph_name, param in model.named_parameters():
        original = named.get(graph_name, graph_name)
        if any(fnmatch.fnmatch(original, p) for p in patterns):
            param.requires_grad_(False)
            frozen.append(original)
    return frozen


def _param_names(model: Any, graph: Any) -> dict[str, str]:
    """Exported graphs rename parameters (``bert_embeddings_...``); map them back by identity of values."""
    mapping: dict[str, str] = {}
    by_ptr = {p.data_ptr(): name for name, p in model.named_parameters()}
    for name, p in graph.named_parameters():
        if p.data_ptr() in by_ptr:
            mapping[name] = by_ptr[p.data_ptr()]
        else:
            mapping[name] = name.replace("_", ".")
    return mapping


def _holdout_split(
    data: TextDataset, targets: np.ndarray, fraction: float, seed: int
) -> tuple[tuple[TextDataset, np.ndarray], tuple[TextDataset, np.ndarray] | None]:
    n = len(data)
    k = int(n * fraction)
    if k < 1:
        return (data, targets), None
    order = np.random.default_rng(seed).permutation(n)
    fit, held = order[k:], order[:k]
    return (data.take(fit), targets[fit]), (data.take(held), targets[held])


def _accuracy(model: Any, task: Any, data: TextDataset, targets: np.ndarray, names: list[str],
              batch_size: int) -> float:
    """Held-out accuracy of the training targets: argmax vs target wherever the target is not ignored
    (one per example for a classifier, one per first sub-token for a tagger); a regressor: −MSE."""
    import torch

    hits = total = 0
    squared = 0.0
    with torch.inference_mode():
        for start in range(0, len(data), batch_size):
            b = {n: data.inputs[n][start: start + batch_size] for n in names}
            out = task.torch_outputs(model(*(torch.from_numpy(b[n]) for n in names)))[0].float().numpy()
            want = targets[start: start + batch_size]
            if np.issubdtype(want.dtype, np.floating):
                squared += float(np.sum((out.reshape(want.shape) - want) ** 2))
                total += want.size
                continue
            keep = want != -100
            hits += int(np.sum((out.argmax(-1) == want) & keep))
            total += int(np.sum(keep))
    if np.issubdtype(targets.dtype, np.floating):
        return -squared / max(total, 1)
    return hits / max(total, 1)


class _Batches:
    """A map-style dataset of pre-tokenized examples (cheap to pickle to DataLoader workers)."""

    def __init__(self, data: TextDataset, targets: np.ndarray, names: list[str]) -> None:
        self.arrays = [data.inputs[n] for n in names]
        self.labels = targets

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        return (*(a[i] for a in self.arrays), self.labels[i])


@dataclass
class _Training:
    """One QAT run in progress: the prepared graph, what trains it, and where it stands."""

    spec: QATSpec
    task: Any
    prepared: Any
    trainable: list[Any]
    optimizer: Any
    scheduler: Any
    total: int
    result: QATResult = field(default_factory=lambda: QATResult(model=None, steps=0))
    step: int = 0
    best: float = -math.inf
    bad_evals: int = 0


def train_qat(
    model: Any,
    train: TextDataset,
    spec: QATSpec,
    *,
    max_positions: int,
    task: Any,
    state_dir: Path | None = None,
    progress: Any | None = None,
) -> QATResult:
    """Quantization-aware fine-tuning with ``task``'s objective (classifier: cross-entropy on the label; tagger:
    cross-entropy on each word's first sub-token); returns the converted int8 graph."""
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    if train.labels is None:
        raise QuantizationError("qat needs labels in data.calibration (label_column)")
    start_time = time.perf_counter()
    _seed(spec.seed)
    names = input_names(train, model)
    (fit, fit_targets), held = _holdout_split(train, task.training_targets(train), spec.holdout, spec.seed)
    run = _start_training(model, fit, names, spec, task, max_positions)
    checkpoint = state_dir / "qat-checkpoint.pt" if state_dir is not None else None
    if checkpoint is not None and checkpoint.is_file():
        _resume(run, checkpoint)
    loader = _loader(fit, fit_targets, names, spec, run.step)
    _train_loop(run, loader, held, names, checkpoint, progress, start_time)
    prepared = run.prepared
    move_exported_model_to_eval(prepared)
    set_attention_dropout(prepared, 0.0)
    result = run.result
    result.model = convert_pt2e(prepared)
    result.steps = run.step
    result.seconds = time.perf_counter() - start_time
    return result


def _start_training(model: Any, fit: TextDataset, names: list[str], spec: QATSpec, task: Any,
                    max_positions: int) -> _Training:
    """Export and prepare ``model`` for QAT, freeze ``qat.freeze``, and set up AdamW with its schedule
    (linear warm-up, then linear decay to 0 at the last step)."""
    import torch

    prepared = prepare_qat(model, example_inputs(fit, names=names), dynamic_shapes(names, max_positions))
    frozen = _freeze(prepared, spec.freeze, _param_names(model, prepared))
    if spec.freeze and not frozen:
        raise QuantizationError(f"qat.freeze: {spec.freeze} matched no parameter")
    trainable = [p for p in prepared.parameters() if p.requires_grad]
    if not trainable:
        raise QuantizationError("qat.freeze: every parameter is frozen; nothing to train")
    total = spec.total_steps(len(fit))
    optimizer = torch.optim.AdamW(trainable, lr=spec.learning_rate, weight_decay=spec.weight_decay)

    def lr_at(step: int) -> float:
        if step < spec.warmup_steps:
            return (step + 1) / max(1, spec.warmup_steps)
        return max(0.0, (total - step) / max(1, total - spec.warmup_steps))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    return _Training(spec, task, prepared, trainable, optimizer, scheduler, total)


def _resume(run: _Training, checkpoint: Path) -> None:
    """Continue from ``checkpoint`` when it was written by a run of the same length and seed."""
    import torch

    state = torch.load(checkpoint, weights_only=False)
    if state.get("total") == run.total and state.get("seed") == run.spec.seed:
        run.prepared.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        run.step = run.result.resumed_from = state["step"]
        run.result.losses = state["losses"]
        run.result.holdout_accuracy = [tuple(x) for x in state["holdout"]]
        logger.info("resuming QAT from step %d of %d (%s)", run.step, run.total, checkpoint)


def _save_checkpoint(run: _Training, checkpoint: Path) -> None:
    """Write the run's state atomically (a temporary file, then renamed over ``checkpoint``)."""
    import torch

    tmp = checkpoint.with_suffix(".tmp")
    torch.save({"model": run.prepared.state_dict(), "optimizer": run.optimizer.state_dict(),
                "scheduler": run.scheduler.state_dict(), "rng": torch.get_rng_state(), "step": run.step,
                "total": run.total, "seed": run.spec.seed, "losses": run.result.losses,
                "holdout": run.result.holdout_accuracy}, tmp)
    os.replace(tmp, checkpoint)


def _loader(fit: TextDataset, targets: np.ndarray, names: list[str], spec: QATSpec, step: int) -> Any:
    """Shuffled training batches (seeded by ``qat.seed`` and the step a resumed run starts from)."""
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    generator = torch.Generator().manual_seed(spec.seed + step)
    return DataLoader(
        _Batches(fit, targets, names), batch_size=spec.batch_size,
        sampler=RandomSampler(range(len(fit)), replacement=False, generator=generator),
        num_workers=spec.num_workers, drop_last=len(fit) > spec.batch_size, persistent_workers=False,
        collate_fn=lambda rows: [torch.from_numpy(np.stack(col)) for col in zip(*rows)],
    )


def _train_loop(run: _Training, loader: Any, held: tuple[TextDataset, np.ndarray] | None, names: list[str],
                checkpoint: Path | None, progress: Any | None, start_time: float) -> None:
    """Train until the last step or early stopping: evaluate on ``held`` and checkpoint as ``qat`` says."""
    from torchao.quantization.pt2e import move_exported_model_to_train

    spec = run.spec
    bar = progress(run.total, "QAT steps") if progress else None
    if bar is not None and run.step:
        bar.update(run.step)
    move_exported_model_to_train(run.prepared)
    seen = 0
    try:
        while run.step < run.total:
            for batch in loader:
                loss = _train_step(run, batch)
                seen += len(batch[-1])
                if bar is not None:
                    bar.update(1)
                    rate = seen / max(time.perf_counter() - start_time, 1e-6)
                    if hasattr(bar, "set_postfix"):
                        bar.set_postfix(loss=f"{loss:.4f}", ex_per_s=f"{rate:.1f}")
                es = spec.early_stopping
                if held is not None and es is not None and run.step % es.eval_every == 0:
                    _evaluate(run, es, held, names, loss)
                if checkpoint is not None and (run.step % spec.checkpoint_every == 0 or run.step == run.total):
                    _save_checkpoint(run, checkpoint)
                if run.step >= run.total or run.result.stopped_early:
                    break
            if run.result.stopped_early:
                logger.info("QAT stopped early at step %d (no held-out gain for %d evaluations)", run.step,
                            spec.early_stopping.patience if spec.early_stopping else 0)
                break
    finally:
        if bar is not None:
            bar.close()


def _train_step(run: _Training, batch: list[Any]) -> float:
    """One optimizer step on ``batch`` (inputs, then targets); returns the loss."""
    import torch

    *inputs, labels = batch
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=run.spec.bf16):
        loss = run.task.training_loss(run.task.torch_outputs(run.prepared(*inputs)), labels)
    if not torch.isfinite(loss):
        raise QuantizationError(f"QAT loss is {loss.item()} at step {run.step}; lower qat.learning_rate")
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if run.spec.max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(run.trainable, run.spec.max_grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.step += 1
    value = float(loss.item())
    run.result.losses.append(value)
    return value


def _evaluate(run: _Training, es: EarlyStoppingSpec, held: tuple[TextDataset, np.ndarray], names: list[str],
              loss: float) -> None:
    """Held-out accuracy now (in eval mode, attention dropout off); sets ``stopped_early`` once it has not
    improved by ``es.min_delta`` for ``es.patience`` evaluations."""
    from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train

    holdout, holdout_targets = held
    move_exported_model_to_eval(run.prepared)
    attention_p = set_attention_dropout(run.prepared, 0.0)
    acc = _accuracy(run.prepared, run.task, holdout, holdout_targets, names, run.spec.batch_size * 2)
    set_attention_dropout(run.prepared, attention_p)
    move_exported_model_to_train(run.prepared)
    run.result.holdout_accuracy.append((run.step, acc))
    logger.info("QAT step %d: loss %.4f, held-out accuracy %.4f", run.step, loss, acc)
    if acc > run.best + es.min_delta:
        run.best, run.bad_evals = acc, 0
    else:
        run.bad_evals += 1
        if run.bad_evals >= es.patience:
            run.result.stopped_early = True
