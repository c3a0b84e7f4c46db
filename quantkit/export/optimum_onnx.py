"""optimum-onnx's exporter behind quantkit's :class:`~quantkit.export.base.Exporter` interface.

Only usable where ``optimum-onnx`` is installed (``pip install 'quantkit[optimum]'``: the transformers 4.57
stack, see ``constraints-optimum.txt``). Nothing here imports optimum until an export or a support
query runs.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import ExportError
from . import base
from .base import EXPORTERS, Exporter

logger = logging.getLogger(__name__)

__all__ = ["OptimumExporter"]


@EXPORTERS.register("optimum")
class OptimumExporter(Exporter):
    """``optimum.exporters.onnx.onnx_export_from_model`` with quantkit's task as optimum's task name."""

    name = "optimum"
    requirement = "optimum-onnx (pip install 'quantkit[optimum]')"

    @classmethod
    def available(cls) -> bool:
        return base.optimum_onnx_available()

    @classmethod
    def supported_tasks(cls, model_type: str) -> list[str]:
        if not cls.available():
            return []
        import optimum.exporters.onnx.model_configs  # noqa: F401  (registers the ONNX configs)
        from optimum.exporters.tasks import TasksManager

        from ..tasks import task_names

        try:
            found = TasksManager.get_supported_tasks_for_model_type(
                model_type, exporter="onnx", library_name="transformers")
        except KeyError:
            return []
        return sorted(t for t in found if t in task_names())

    def _export(self, loaded: Any, folder: Path, opset: int) -> Path:
        from optimum.exporters.onnx import onnx_export_from_model

        from ..tasks import task_for

        folder = Path(folder)
        # a task whose graph carries a KV cache is optimum's "-with-past" variant of it
        task = loaded.task + ("-with-past" if getattr(task_for(loaded.task), "kv_cache", False) else "")
        with tempfile.TemporaryDirectory(prefix="quantkit-optimum-") as tmp:
            onnx_export_from_model(loaded.model, output=tmp, opset=opset, task=task, do_validation=False)
            produced = sorted(Path(tmp).glob("*.onnx"))
            if len(produced) != 1:
                raise ExportError(
                    f"expected one ONNX file from optimum-onnx, got {[p.name for p in produced]}; "
                    "multi-file (encoder-decoder) models are not supported"
                )
            path = folder / "model.onnx"
            shutil.move(str(produced[0]), path)
            data_file = Path(tmp) / (produced[0].name + "_data")
            if data_file.exists():
                shutil.move(str(data_file), folder / data_file.name)
        return path
