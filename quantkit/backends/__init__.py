"""Quantization backends behind one registry, and what every other module may know about them.

A backend turns an FP32 ONNX model plus a :class:`~quantkit.spec.QuantizationConfig`
(and calibration data for static quantization) into a quantized ONNX file.
Backends register with ``@BACKENDS.register(name)``; the heavy ones are imported
only when first asked for. Nobody outside this package compares a backend's name: the
facts others need (needs torch, reads calibration data, quantizes the ONNX graph, runs on
workers, takes hardware defaults, its approaches and op types, its config rules) are class
attributes and methods of :class:`Backend`, asked through :func:`backend_class`.
"""

from __future__ import annotations

import difflib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Mapping
from typing import Any, ClassVar

from ..data import TextDataset
from ..errors import QuantizationError, QuantkitError
from ..export import ExportedModel
from ..faults import fault_point
from ..graph import graph_summary
from ..registry import Registry
from .optypes import quantizable_op_types
from ..spec import QuantizationConfig

logger = logging.getLogger(__name__)

__all__ = ["BACKENDS", "Backend", "QuantizeRequest", "QuantizedModel", "backend_class", "get_backend", "ProgressFactory"]

#: ``progress(total, description)`` → an object with ``update(n)`` and ``close()`` (tqdm-compatible).
ProgressFactory = Callable[[int, str], Any]

BACKENDS: Registry[type["Backend"]] = Registry(
    "backend",
    lazy={
        "onnxruntime": "quantkit.backends.onnxruntime",
        "neural-compressor": "quantkit.backends.neural_compressor",
    },
)


@dataclass
class QuantizeRequest:
    """Everything a backend may use to quantize one model."""

    fp32: ExportedModel
    config: QuantizationConfig
    output_path: Path
    workdir: Path
    calibration: TextDataset | None = None
    progress: ProgressFactory | None = None
    #: The PyTorch model (LoadedModel), for backends that quantize before export.
    loaded: Any | None = None
    #: QATSpec for approach "qat".
    qat: Any | None = None
    #: A folder that survives an interrupted run (training checkpoints).
    state_dir: Path | None = None


@dataclass
class QuantizedModel:
    """A quantized ONNX model on disk and what went into it."""

    path: Path
    backend: str
    config: QuantizationConfig
    summary: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0
    calibration_s: float = 0.0
    #: Backend-specific facts for the report (e.g. QAT training curve).
    details: dict[str, Any] = field(default_factory=dict)


class Backend(ABC):
    """Template: :meth:`quantize` checks inputs and outputs, :meth:`_quantize` does the work."""

    name: ClassVar[str]
    approaches: ClassVar[frozenset[str]] = frozenset({"dynamic", "static"})
    #: Whether the backend quantizes the PyTorch model (needs ``loaded``).
    needs_torch: ClassVar[bool] = False
    #: Whether ``data.calibration`` is read for every approach (a PyTorch export needs forward passes even for
    #: dynamic quantization), not only for the static ones.
    reads_calibration_always: ClassVar[bool] = False
    #: Whether it quantizes the FP32 ONNX graph, so that ``export.optimize`` levels (fusions, the probe) apply.
    optimizes_graph: ClassVar[bool] = True
    #: Whether its trials can run on cluster workers (only ONNX graphs and data are shipped there).
    runs_on_workers: ClassVar[bool] = True
    #: Whether the hardware target's defaults (weight/activation types, reduce_range, format) apply to it.
    takes_hardware_defaults: ClassVar[bool] = True

    @classmethod
    def config_issues(cls, config: QuantizationConfig) -> list[tuple[str, str]]:
        """(spec key path, message) for what this backend cannot do with ``config``; empty when it can.

        The first problem only, as a validator would stop at it: the backend's own rules
        (:meth:`_config_issues`), then its approaches and quantizable op types.
        """
        issues = list(cls._config_issues(config))
        if config.approach not in cls.approaches:
            able = [n for n in BACKENDS.names() if config.approach in BACKENDS.get(n).approaches]
            issues.append(("quantization.approach", f"{config.approach} is not supported by backend {cls.name} "
                           f"(supports {', '.join(sorted(cls.approaches))}); set backend: {', '.join(able)}"))
        known = quantizable_op_types(cls.name, config.approach, config.format)
        if known is not None and (unknown := [t for t in config.op_types if t not in known]):
            how = f"{config.approach}" + (f" {config.quant_format}" if config.approach == "static" else "")
            close = {t: m[0] for t in unknown if (m := difflib.get_close_matches(t, sorted(known), n=1, cutoff=0.75))}
            hints = [repr(m) if len(unknown) == 1 else f"{m!r} for {t!r}" for t, m in close.items()]
            guess = f" (did you mean {', '.join(hints)}?)" if hints else ""
            issues.append(("quantization.op_types", f"{', '.join(map(repr, unknown))} cannot be quantized by "
                           f"{cls.name} ({how}){guess}; it can quantize: {', '.join(sorted(known))}"))
        return issues[:1]

    @classmethod
    def _config_issues(cls, config: QuantizationConfig) -> list[tuple[str, str]]:
        """The backend's own rules beyond approaches and op types (override)."""
        return []

    @classmethod
    def data_to_quantize_with(cls, calibration: TextDataset | None, evaluation: TextDataset) -> TextDataset | None:
        """What :meth:`quantize` gets as ``calibration``: the calibration data; a PyTorch backend, which needs
        forward passes whatever the approach, gets the evaluation data when there is none."""
        return calibration if calibration is not None or not cls.needs_torch else evaluation

    def quantize(
        self,
        model: ExportedModel,
        config: QuantizationConfig,
        output_path: str | Path,
        *,
        calibration: TextDataset | None = None,
        workdir: str | Path | None = None,
        progress: ProgressFactory | None = None,
        loaded: Any | None = None,
        qat: Any | None = None,
        state_dir: str | Path | None = None,
    ) -> QuantizedModel:
        if config.approach not in self.approaches:
            raise QuantizationError(
                f"backend {self.name!r} does not support approach {config.approach!r} "
                f"(supports {', '.join(sorted(self.approaches))})"
            )
        if config.approach in ("static", "qat") and (calibration is None or len(calibration) == 0):
            raise QuantizationError(f"{config.approach} quantization needs data.calibration")
        if self.needs_torch and loaded is None:
            raise QuantizationError(f"backend {self.name!r} quantizes the PyTorch model: pass loaded=")
        if not Path(model.path).is_file():
            raise QuantizationError(f"FP32 model not found: {model.path}")
        fault_point("export")  # the FP32 model is exported (and optimized); quantization starts
        output_path = Path(output_path)
        output_path.parent.mkdir(parents=True, exist_ok=True)
        workdir = Path(workdir) if workdir is not None else output_path.parent
        logger.info(
            "quantizing with %s: %s, %s", self.name, config.approach, config.model_dump(exclude={"calibration"})
        )
        if state_dir is not None:
            Path(state_dir).mkdir(parents=True, exist_ok=True)
        request = QuantizeRequest(
            fp32=model, config=config, output_path=output_path, workdir=workdir, calibration=calibration,
            progress=progress, loaded=loaded, qat=qat, state_dir=Path(state_dir) if state_dir else None,
        )
        self.details: dict[str, Any] = {}
        start = time.perf_counter()
        try:
            calibration_s = self._quantize(request)
        except QuantkitError:
            raise
        except Exception as exc:  # noqa: BLE001 - backends raise anything; keep the cause
            raise QuantizationError(f"{self.name}: {type(exc).__name__}: {exc}") from exc
        if not output_path.is_file():
            raise QuantizationError(f"{self.name} produced no model at {output_path}")
        fault_point("quantize")
        result = QuantizedModel(
            path=output_path,
            backend=self.name,
            config=config,
            summary=graph_summary(output_path),
            duration_s=time.perf_counter() - start,
            calibration_s=calibration_s or 0.0,
            details=dict(self.details),
        )
        if result.summary["quantized_weights"] == 0:
            raise QuantizationError(
                f"{self.name} quantized nothing: no {', '.join(config.op_types)} node with weights was found "
                "(check quantization.op_types and nodes_to_exclude)"
            )
        logger.info("quantized model: %s", result.summary["ops"])
        return result

    @abstractmethod
    def _quantize(self, request: QuantizeRequest) -> float | None:
        """Write the quantized model to ``request.output_path``; return seconds spent calibrating/training."""

    def ort_config(self, config: QuantizationConfig, opset: int) -> dict[str, Any] | None:
        """Optimum's ``ort_config.json`` content describing ``config``, if expressible."""
        return None


def backend_class(name: str) -> type[Backend]:
    """The backend class registered as ``name`` (its facts), importing its module on first use."""
    return BACKENDS.get(name)


def get_backend(name: str) -> Backend:
    return BACKENDS.get(name)()
