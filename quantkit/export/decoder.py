"""Causal LMs to ONNX with a KV cache, and the check of the graph against PyTorch (prefill, then a decode step).

One decoder graph serves prefill and decode: inputs ``input_ids``, ``attention_mask`` (past + new tokens),
``position_ids`` and ``past_key_values.N.key`` / ``.value`` (``[batch, kv_heads, past_sequence_length, head_dim]``;
past length 0 for a prefill), outputs ``logits`` and ``present.N.key`` / ``.value``: the names and layout Optimum's
``ORTModelForCausalLM`` and onnxruntime-genai read. Exported with the TorchScript exporter (as encoders are) from
the model's eager attention, through a wrapper that turns the flat past tensors into a transformers
``DynamicCache`` (every layer a full-length cache: sliding-window layers get their window from the mask).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ExportError, ExportValidationError
from ..feeds import carried_cache

logger = logging.getLogger(__name__)

__all__ = ["DECODER_FAMILIES", "CacheLayout", "cache_layout", "export_decoder", "validate_decoder", "io_names",
           "decoder_tracing_supported"]

#: Causal-LM model types quantkit exports (each covered by a tiny-model test against PyTorch).
DECODER_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "gpt2",
                    "smollm3", "granite", "olmo2")


def decoder_tracing_supported() -> bool:
    """Whether the installed transformers traces with this wrapper: transformers 5 (4.57's masking code fails in the
    TorchScript tracer; there, optimum-onnx's exporter writes the same graph, see ``export.exporter: auto``)."""
    import transformers

    return int(transformers.__version__.split(".")[0]) >= 5


class CacheLayout:
    """Layers, KV heads and head size of a model's cache, read from one PyTorch forward pass."""

    def __init__(self, layers: int, heads: int, head_dim: int, dtype: Any) -> None:
        self.layers, self.heads, self.head_dim, self.dtype = layers, heads, head_dim, dtype

    def __repr__(self) -> str:
        return f"CacheLayout(layers={self.layers}, heads={self.heads}, head_dim={self.head_dim})"

    def empty(self, batch: int, past: int = 0, rng: np.random.Generator | None = None) -> list[np.ndarray]:
        shape = (batch, self.heads, past, self.head_dim)
        if rng is None:
            return [np.zeros(shape, np.float32) for _ in range(2 * self.layers)]
        return [rng.standard_normal(shape).astype(np.float32) for _ in range(2 * self.layers)]


def _layers(cache: Any) -> list[tuple[Any, Any]]:
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return [(k, v) for k, v in cache]  # legacy tuples


def cache_layout(model: Any) -> CacheLayout:
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.zeros((1, 2), dtype=torch.long), use_cache=True)
    layers = _layers(out.past_key_values)
    if not layers:
        raise ExportError(f"{type(model).__name__} returned no KV cache (use_cache=True); quantkit exports "
                          "decoders with a cache")
    k = layers[0][0]
    return CacheLayout(len(layers), int(k.shape[1]), int(k.shape[3]), k.dtype)


def io_names(layers: int) -> tuple[list[str], list[str]]:
    inputs = ["input_ids", "attention_mask", "position_ids"]
    outputs = ["logits"]
    for i in range(layers):
        inputs += [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
        outputs += [f"present.{i}.key", f"present.{i}.value"]
    return inputs, outputs


def _wrapper(model: Any, layers: int) -> Any:
    import torch
    from transformers import DynamicCache

    class Decoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, position_ids: Any, *past: Any) -> tuple[Any, ...]:
            cache = DynamicCache()
            for i in range(layers):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=cache, use_cache=True)
            flat = [t for pair in _layers(out.past_key_values) for t in pair]
            return (out.logits, *flat)

    return Decoder().eval()


def export_decoder(loaded: Any, folder: Path, opset: int) -> Path:
    """Trace ``loaded`` (a causal LM) with a 3-token past and 5 new tokens into ``folder/model.onnx``."""
    import torch

    from .tracing import consolidate_external_data, eager_attention

    model = loaded.model
    model.eval()
    layout = cache_layout(model)
    inputs, outputs = io_names(layout.layers)
    batch, past, new = 2, 3, 5
    vocab = int(getattr(loaded.config, "vocab_size", 1000) or 1000)
    rng = np.random.default_rng(0)
    ids = torch.from_numpy(rng.integers(0, vocab, size=(batch, new), dtype=np.int64))
    mask = torch.ones((batch, past + new), dtype=torch.long)
    positions = torch.arange(past, past + new, dtype=torch.long).expand(batch, new).contiguous()
    cache = [torch.from_numpy(a) for a in layout.empty(batch, past, rng)]
    axes: dict[str, dict[int, str]] = {
        "input_ids": {0: "batch_size", 1: "sequence_length"},
        "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
        "position_ids": {0: "batch_size", 1: "sequence_length"},
        "logits": {0: "batch_size", 1: "sequence_length"},
    }
    for name in inputs[3:]:
        axes[name] = {0: "batch_size", 2: "past_sequence_length"}
    for name in outputs[1:]:
        axes[name] = {0: "batch_size", 2: "total_sequence_length"}
    path = Path(folder) / "model.onnx"
    with eager_attention(model), torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings on shape-dependent Python branches
        torch.onnx.export(_wrapper(model, layout.layers), (ids, mask, positions, *cache), str(path),
                          input_names=inputs, output_names=outputs, dynamic_axes=axes, opset_version=opset,
                          do_constant_folding=True, dynamo=False)
    consolidate_external_data(path)
    logger.info("exported %s with a KV cache: %r", loaded.name_or_path, layout)
    return path


def _check(name: str, got: np.ndarray, expected: np.ndarray, keep: np.ndarray | None, atol: float,
           where: str) -> float:
    """Max abs diff of ``got`` vs ``expected`` at ``keep``, divided by the output's scale (max |expected|, at least
    1): a 49k-wide vocabulary's logits of magnitude 30 differ by 1e-4 from float32 summation order alone."""
    if got.shape != expected.shape:
        raise ExportValidationError(f"output {name!r} {where}: ONNX shape {got.shape} != PyTorch {expected.shape}",
                                    max_abs_diff=float("inf"), atol=atol)
    delta = np.abs(got - expected)
    scale = np.abs(expected)
    if keep is not None:
        delta, scale = delta[keep], scale[keep]
    diff = float(delta.max() / max(float(scale.max()), 1.0)) if delta.size else 0.0
    if not np.isfinite(diff) or diff > atol:
        raise ExportValidationError(f"output {name!r} {where}: max abs diff {diff:.3g} of its scale > atol {atol:g}",
                                    max_abs_diff=diff, atol=atol,
                                    hint="raise export.atol if the difference is expected, or try another "
                                    "export.opset")
    return diff


def validate_decoder(onnx_path: str | Path, loaded: Any, lengths: list[int], *, atol: float, seed: int = 0) -> float:
    """Prefill ``length`` tokens (batch 2, the second row left-padded), then decode one token with the returned
    cache, in ONNX Runtime and PyTorch; compare logits (kept positions) and the cache. Returns the max abs diff."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inputs, outputs = io_names(cache_layout(loaded.model).layers)
    names = [i.name for i in session.get_inputs()]
    if names != inputs:
        raise ExportValidationError(f"graph inputs {names} are not the decoder's {inputs}", max_abs_diff=float("inf"),
                                    atol=atol)
    layout = cache_layout(loaded.model)
    rng = np.random.default_rng(seed)
    vocab = int(getattr(loaded.config, "vocab_size", 1000) or 1000)
    worst = 0.0
    for length in lengths:
        ids = rng.integers(0, vocab, size=(2, length), dtype=np.int64)
        mask = np.ones((2, length), dtype=np.int64)
        mask[1, : min(2, length - 1)] = 0
        pos = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
        feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": pos,
                 **dict(zip(inputs[3:], layout.empty(2)))}
        got = dict(zip(outputs, session.run(None, feeds)))
        with torch.no_grad():
            ref = loaded.model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                               position_ids=torch.from_numpy(pos), use_cache=True)
        where = f"at prefill of {length} tokens"
        worst = max(worst, _check("logits", got["logits"], ref.logits.float().numpy(), mask.astype(bool), atol, where))
        for i, (k, v) in enumerate(_layers(ref.past_key_values)):
            # a sliding-window layer of PyTorch's cache keeps its last tokens only; the graph keeps them all (the
            # mask applies the window): compare the tokens both hold
            held = k.shape[2]
            keep = np.broadcast_to(mask.astype(bool)[:, None, -held:, None], k.shape)
            for kind, ref_t in (("key", k), ("value", v)):
                name = f"present.{i}.{kind}"
                worst = max(worst, _check(name, got[name][:, :, -held:], ref_t.float().numpy(), keep, atol, where))
        step = rng.integers(0, vocab, size=(2, 1), dtype=np.int64)
        mask2 = np.concatenate([mask, np.ones((2, 1), np.int64)], axis=1)
        pos2 = pos[:, -1:] + 1
        feeds = {"input_ids": step, "attention_mask": mask2, "position_ids": pos2,
                 **carried_cache(got)}
        got2 = dict(zip(outputs, session.run(None, feeds)))
        with torch.no_grad():
            ref2 = loaded.model(input_ids=torch.from_numpy(step), attention_mask=torch.from_numpy(mask2),
                                position_ids=torch.from_numpy(pos2), past_key_values=ref.past_key_values,
                                use_cache=True)
        worst = max(worst, _check("logits", got2["logits"], ref2.logits.float().numpy(), None, atol,
                                  f"at the decode step after {length} tokens"))
    logger.info("ONNX decoder matches PyTorch: max abs diff %.3g of the outputs' scale (atol %g), prefill lengths "
                "%s + one decode step",
                worst, atol, lengths)
    return worst
