"""Stage 2 (model): the model's encoder family against quantkit's tested support matrix (quantkit/families.py).

A (backend, approach, task) cell the family data marks as refused is an error here, in seconds, with the
reason and the route that works, instead of a failure after the FP32 export and calibration. A model type
outside the matrix is fine for ONNX Runtime (its export is validated against PyTorch whatever the family),
but the PyTorch routes (Intel Neural Compressor PT2E, QAT) trace the model with torch.export, which a new
architecture can defeat: that gets a warning.
"""

from __future__ import annotations

import logging
from ..backends import BACKENDS, backend_class
from ..families import FAMILIES, family_of, refusal
from ..resolve import search_routes
from .base import CheckContext, Problem, check, error, warning
from .model import get_config, get_task

logger = logging.getLogger(__name__)

__all__ = ["check_family", "candidate_routes"]


def candidate_routes(ctx: CheckContext) -> list[tuple[str, str, bool]]:
    """(backend, approach, from_search) of every quantization this spec can run: its ``quantization`` section,
    then the combinations its ``tuning.space`` lists."""
    return search_routes(ctx.spec)


@check("model.family", stage="model")
def check_family(ctx: CheckContext) -> list[Problem]:
    """The family's tested cells: refused routes are errors (warnings for search candidates); a model type
    outside the matrix warns before the PyTorch routes trace it."""
    config, task = get_config(ctx).value, get_task(ctx).value
    if config is None or task is None:
        return []
    model_type = str(getattr(config, "model_type", "") or "")
    family = family_of(model_type)
    problems: list[Problem] = []
    routes = candidate_routes(ctx)
    if family is None:
        torch_routes = sorted({f"{b} {a}" for b, a, _ in routes if b in BACKENDS and backend_class(b).needs_torch})
        if torch_routes:
            problems.append(warning(
                "quantization.backend",
                f"model type {model_type!r} is not among the encoder families quantkit tests "
                f"({', '.join(FAMILIES)}): {', '.join(torch_routes)} traces it with torch.export, untested for "
                "this architecture, which fails only after the FP32 export",
                "backend: onnxruntime quantizes every model optimum-onnx exports (its export is checked against "
                "PyTorch); or try this one on a small calibration set first",
            ))
        return problems
    for backend, approach, from_search in routes:
        why = refusal(model_type, backend, approach, task)
        if why is None:
            continue
        message = f"{family.name} ({model_type}): {backend} {approach} cannot quantize a {task} model: {why.reason}"
        if from_search:
            problems.append(warning("tuning.space", message + "; those candidates would fail",
                                    f"drop them from tuning.space; {why.instead}"))
        else:
            key = "quantization.approach" if approach == "qat" else "quantization.backend"
            problems.append(error(key, message, why.instead))
    return problems
