"""What quantkit's TorchScript exports (encoders and decoders) share: eager attention during the trace, and one
external-data file for graphs over 2 GB."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["eager_attention", "consolidate_external_data"]


@contextlib.contextmanager
def eager_attention(model: Any) -> Iterator[None]:
    """Switch ``model`` to eager attention for the trace; restore it afterwards.

    Models whose attention layers were chosen at construction (BERT on transformers 4.57) cannot switch;
    they are traced as they are (their SDPA graph fuses too, as optimum-onnx's export of them shows).
    """
    before = getattr(model.config, "_attn_implementation", None)
    setter = getattr(model, "set_attn_implementation", None)
    can_switch = getattr(model, "_can_set_attn_implementation", lambda: setter is not None)
    changed = False
    if before not in (None, "eager") and setter is not None:
        try:
            if can_switch():
                setter("eager")
                changed = True
        except Exception as exc:  # noqa: BLE001 - a model that only has one implementation
            logger.debug("cannot switch %s to eager attention: %s", type(model).__name__, exc)
    try:
        yield
    finally:
        if changed:
            try:
                setter(before)
            except Exception as exc:  # noqa: BLE001
                logger.warning("could not restore attention implementation %r: %s", before, exc)


def consolidate_external_data(path: Path) -> None:
    """A > 2 GB graph is written with one external file per tensor: gather them into ``model.onnx_data``."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    external = [t for t in model.graph.initializer if uses_external_data(t)]
    if not external:
        return
    files = {e.value for t in external for e in t.external_data if e.key == "location"}
    model = onnx.load(str(path), load_external_data=True)
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location=path.name + "_data", size_threshold=1024, convert_attribute=False)
    for name in files:
        if name != path.name + "_data":
            (path.parent / name).unlink(missing_ok=True)
