"""The exporter registry: what an exporter is, which ones exist, and which one ``export.exporter`` picks.

Two exporters write the FP32 graph quantkit quantizes, both behind :class:`Exporter`:

- ``quantkit`` (:mod:`quantkit.export.torchscript`): quantkit's own, no optimum-onnx. Inputs come from the
  tokenizer (``input_ids``, ``attention_mask``, ``token_type_ids`` when the model takes it), outputs and
  their axes from the task registry (:attr:`quantkit.tasks.Task.output_names` / ``output_axes``). Works on
  both supported stacks (transformers 5 and 4.57).
- ``optimum`` (:mod:`quantkit.export.optimum_onnx`): optimum-onnx's ``onnx_export_from_model``; only where
  ``optimum-onnx`` is installed (``pip install 'quantkit[optimum]'``, the transformers 4.57 stack).

``export.exporter: auto`` picks ``quantkit`` whenever it supports the model type and task (the same graph
on every stack), and ``optimum`` only for a model quantkit's exporter does not cover and optimum-onnx can
export, where optimum-onnx is installed.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any, ClassVar

from ..errors import ExportError, OptionalDependencyError
from ..registry import Registry

logger = logging.getLogger(__name__)

__all__ = ["Exporter", "EXPORTERS", "EXPORTER_CHOICES", "optimum_onnx_available", "resolve_exporter",
           "exportable_tasks"]

#: Values of the spec's ``export.exporter``.
EXPORTER_CHOICES = ("auto", "quantkit", "optimum")

#: name → module that registers it (imported on first use; neither imports optimum at module level).
EXPORTERS: Registry[type[Exporter]] = Registry(
    "exporter", lazy={"quantkit": "quantkit.export.torchscript", "optimum": "quantkit.export.optimum_onnx"}
)


def optimum_onnx_available() -> bool:
    """optimum-onnx (``optimum.exporters.onnx`` and ``optimum.onnxruntime``) is installed and imports.

    On the transformers 5 stack optimum-onnx 0.1.0 is absent (or, installed by hand, fails to import):
    both count as unavailable.
    """
    if importlib.util.find_spec("optimum") is None:
        return False
    try:
        if importlib.util.find_spec("optimum.exporters.onnx") is None:
            return False
        import optimum.exporters.onnx  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - a broken install raises ImportError or anything at import time
        logger.debug("optimum-onnx does not import: %s", exc)
        return False
    return True


class Exporter:
    """One way of turning a loaded transformers model into an FP32 ONNX file.

    Subclasses set :attr:`name` and implement :meth:`supported_tasks` and :meth:`_export`; the caller
    (:func:`quantkit.export.export_onnx`) pins fixed axes and validates the graph against PyTorch.
    """

    name: ClassVar[str]
    #: What to install when :meth:`available` is false.
    requirement: ClassVar[str] = ""

    @classmethod
    def available(cls) -> bool:
        return True

    @classmethod
    def supported_tasks(cls, model_type: str) -> list[str]:
        """quantkit task names this exporter can export for ``model_type`` (empty: none)."""
        raise NotImplementedError

    def export(self, loaded: Any, folder: Path, opset: int) -> Path:
        """Write ``loaded`` to ``folder`` as one ONNX file (plus its ``_data`` file when > 2 GB); return its path."""
        if not self.available():
            raise OptionalDependencyError(
                f"export.exporter: {self.name} needs {self.requirement}, which is not installed",
                hint="pip install 'quantkit[optimum]' in a separate environment (transformers 4.57 stack), "
                "or use export.exporter: quantkit",
            )
        logger.info("exporting %s (%s) with the %s exporter, opset %d", loaded.name_or_path, loaded.task,
                    self.name, opset)
        try:
            return self._export(loaded, folder, opset)
        except ExportError:
            raise
        except Exception as exc:  # noqa: BLE001 - exporters raise anything
            raise ExportError(f"the {self.name} exporter could not export {loaded.name_or_path} ({loaded.task}): "
                              f"{type(exc).__name__}: {exc}") from exc

    def _export(self, loaded: Any, folder: Path, opset: int) -> Path:
        raise NotImplementedError


def exportable_tasks(model_type: str, exporter: str = "auto") -> list[str]:
    """quantkit task names some usable exporter can export for ``model_type`` (``auto``: quantkit's, plus
    optimum-onnx's where it is installed)."""
    names = ["quantkit", "optimum"] if exporter == "auto" else [exporter]
    tasks: set[str] = set()
    for name in names:
        cls = EXPORTERS.get(name)
        if cls.available():
            tasks.update(cls.supported_tasks(model_type))
    return sorted(tasks)


def resolve_exporter(choice: str, model_type: str, task: str) -> str:
    """The exporter ``export.exporter: choice`` means for this model: ``quantkit`` or ``optimum``.

    ``auto``: quantkit's when it supports the model type and task, else optimum-onnx's when it is
    installed and does, else quantkit's (whose export then fails with its own message).
    """
    if choice != "auto":
        EXPORTERS.get(choice)  # unknown names list the known ones
        return choice
    if task in EXPORTERS.get("quantkit").supported_tasks(model_type):
        return "quantkit"
    optimum = EXPORTERS.get("optimum")
    if optimum.available() and task in optimum.supported_tasks(model_type):
        logger.info("export.exporter auto: quantkit's exporter does not cover %s %s; using optimum-onnx's",
                    model_type, task)
        return "optimum"
    return "quantkit"
