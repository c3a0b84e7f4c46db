"""quantkit: hardware-aware quantization of Hugging Face models for x86 CPUs.

Public API (imported lazily so that ``import quantkit`` stays fast)::

    from quantkit import Quantizer, load_spec
    result = Quantizer.from_pretrained("my-model").quantize("int8.yaml", output_dir="out")
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .errors import (
    ArtifactError,
    ArtifactNotFoundError,
    BenchmarkError,
    DataError,
    EvaluationError,
    ExecutorError,
    ExecutorUnavailableError,
    ExportError,
    ExportValidationError,
    HubAuthError,
    HubError,
    HubNotFoundError,
    HubRepoIdError,
    ModelLoadError,
    OutputExistsError,
    PreflightError,
    QuantizationError,
    QuantkitError,
    RegistryError,
    SpecError,
    TimingMismatchError,
    ToleranceNotMetError,
)

from ._version import __version__

_LAZY = {
    "Quantizer": "quantkit.quantizer",
    "QuantizationResult": "quantkit.quantizer",
    "QuantizationSpec": "quantkit.spec",
    "load_spec": "quantkit.specio",
    "parse_spec": "quantkit.specio",
    "with_overrides": "quantkit.specio",
    "run_checks": "quantkit.checks",
}

__all__ = [
    "__version__",
    "Quantizer",
    "QuantizationResult",
    "QuantizationSpec",
    "load_spec",
    "parse_spec",
    "with_overrides",
    "QuantkitError",
    "SpecError",
    "ModelLoadError",
    "DataError",
    "ExportError",
    "ExportValidationError",
    "QuantizationError",
    "EvaluationError",
    "ArtifactError",
    "OutputExistsError",
    "RegistryError",
    "ToleranceNotMetError",
    "ArtifactNotFoundError",
    "HubError",
    "HubAuthError",
    "HubNotFoundError",
    "HubRepoIdError",
    "BenchmarkError",
    "PreflightError",
    "ExecutorError",
    "ExecutorUnavailableError",
    "TimingMismatchError",
    "run_checks",
]

if TYPE_CHECKING:  # pragma: no cover
    from .quantizer import QuantizationResult, Quantizer
    from .checks import run_checks
    from .spec import QuantizationSpec
    from .specio import load_spec, parse_spec, with_overrides


def __dir__() -> list[str]:
    """The public API, the lazily imported names included (``dir(quantkit)``, tab completion)."""
    return sorted(set(globals()) | set(__all__))


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'quantkit' has no attribute {name!r}")
