"""Graph inputs that no tokenizer makes: a decoder's ``position_ids`` and its KV cache.

A causal LM's graph (``quantkit.export.decoder``) takes ``past_key_values.N.key/value`` beside the tokens. Every
place that runs a graph on token batches (evaluation, timing, calibration, validation) completes its feeds here, so
none of them needs to know which task made the graph: a prefill gets an empty cache (past length 0) and positions
counted from the attention mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["PAST_PREFIXES", "is_past", "fillable", "complete_feeds", "past_shape", "carried_cache"]

#: Names of KV-cache graph inputs (ours and optimum's are ``past_key_values.N.key``; older GPT-2 exports ``past.N``).
PAST_PREFIXES = ("past_key_values", "past.")
_NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
          "tensor(int64)": np.int64, "tensor(int32)": np.int32}


def is_past(name: str) -> bool:
    return name.startswith(PAST_PREFIXES)


def fillable(name: str) -> bool:
    """Whether :func:`complete_feeds` can make input ``name`` when the data lacks it."""
    return name == "position_ids" or is_past(name)


def past_shape(shape: Sequence[Any], batch: int, past: int = 0) -> tuple[int, ...]:
    """A KV-cache input's shape: ``[batch, heads, past, head_dim]`` from the graph's dims (symbolic ones are the
    batch, then the past length)."""
    dims = []
    symbolic = 0
    for dim in shape:
        if isinstance(dim, int) and dim > 0:
            dims.append(dim)
        else:
            dims.append(batch if symbolic == 0 else past)
            symbolic += 1
    return tuple(dims)


def positions(mask: np.ndarray) -> np.ndarray:
    """Position ids from an attention mask: counted over the kept tokens (left padding gets position 0)."""
    return np.clip(np.cumsum(mask, axis=1) - 1, 0, None).astype(np.int64)


def complete_feeds(inputs: Sequence[Any], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``feeds`` plus what the graph's ``inputs`` (ONNX Runtime ``NodeArg``s) need and the feeds lack: position
    ids from the attention mask, an empty KV cache. Returns ``feeds`` itself when nothing is missing."""
    missing = [i for i in inputs if i.name not in feeds and fillable(i.name)]
    if not missing:
        return feeds
    out = dict(feeds)
    ids = feeds.get("input_ids")
    batch, seq = ids.shape if ids is not None else (1, 1)
    for inp in missing:
        if inp.name == "position_ids":
            mask = feeds.get("attention_mask")
            out[inp.name] = positions(mask) if mask is not None else np.tile(np.arange(seq, dtype=np.int64),
                                                                             (batch, 1))
        else:
            out[inp.name] = np.zeros(past_shape(inp.shape, batch), dtype=_NUMPY.get(inp.type, np.float32))
    return out


def carried_cache(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A decoder step's ``present.N.key/value`` outputs as the next step's ``past_key_values.N.key/value`` feeds."""
    return {n.replace("present", "past_key_values", 1): v for n, v in outputs.items() if n.startswith("present")}
