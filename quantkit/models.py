"""Loading Hugging Face models: the only module that calls transformers' Auto* loaders."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ModelLoadError, SpecError, SpecIssue

logger = logging.getLogger(__name__)

__all__ = ["LoadedModel", "load_model", "infer_task", "exportable_tasks"]


@dataclass
class LoadedModel:
    """A transformers model with its tokenizer and task, ready to export."""

    model: Any  # transformers.PreTrainedModel
    tokenizer: Any  # transformers.PreTrainedTokenizerBase
    task: str
    name_or_path: str
    revision: str | None = None

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def model_type(self) -> str:
        return self.model.config.model_type

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def _load_config(name_or_path: str, revision: str | None, trust_remote_code: bool) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise ModelLoadError(
                f"{name_or_path}: the model needs its own code to load; "
                "set model.trust_remote_code: true only if you trust this repository",
            ) from None
        raise ModelLoadError(f"{name_or_path}: cannot read the model config: {exc}") from exc
    except OSError as exc:
        local = Path(name_or_path).expanduser()
        if local.exists() or name_or_path.startswith((".", "/", "~")):
            msg = f"{name_or_path}: no loadable model here (expected a folder with config.json): {exc}"
        else:
            msg = f"{name_or_path}: not a local folder, and the Hub could not provide it: {exc}"
        raise ModelLoadError(msg, hint="check model.name_or_path / --model, network access and HF_TOKEN") from None


def exportable_tasks(model_type: str) -> list[str]:
    """Tasks optimum-onnx can export for ``model_type``."""
    import optimum.exporters.onnx.model_configs  # noqa: F401  (registers ONNX configs)
    from optimum.exporters.tasks import TasksManager

    try:
        return sorted(
            TasksManager.get_supported_tasks_for_model_type(model_type, exporter="onnx", library_name="transformers")
        )
    except KeyError:
        return []


def infer_task(config: Any) -> str:
    """Infer the export task from a model config's ``architectures`` via optimum's TasksManager."""
    import transformers
    from optimum.exporters.tasks import TasksManager

    for arch in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, arch, None)
        if cls is None:
            continue
        try:
            return TasksManager.infer_task_from_model(cls)
        except (KeyError, ValueError, RuntimeError):
            continue
    raise SpecError(
        [SpecIssue(None, "model.task", "cannot infer the task from the model config; set it explicitly "
                   "(e.g. text-classification)")]
    )


def _canonical_task(task: str) -> str:
    from optimum.exporters.tasks import TasksManager

    try:
        return TasksManager.map_from_synonym(task)
    except Exception:  # noqa: BLE001 - older/newer optimum: keep the given name
        return task


def load_model(
    name_or_path: str,
    *,
    task: str | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    **load_options: Any,
) -> LoadedModel:
    """Load config, model and tokenizer with the transformers Auto classes.

    The task is inferred from the config when not given. Safetensors weights are
    preferred when both formats exist; remote code runs only when asked.
    """
    from optimum.exporters.tasks import TasksManager
    from transformers import AutoTokenizer

    config = _load_config(name_or_path, revision, trust_remote_code)
    task = _canonical_task(task) if task else infer_task(config)
    supported = exportable_tasks(config.model_type)
    if supported and task not in supported:
        raise SpecError(
            [SpecIssue(None, "model.task", f"{task!r} cannot be exported for model type {config.model_type!r}; "
                       f"supported: {', '.join(supported)}")]
        )
    try:
        auto_cls = TasksManager.get_model_class_for_task(task, framework="pt")
    except (KeyError, ValueError) as exc:
        raise SpecError([SpecIssue(None, "model.task", f"unknown task {task!r}: {exc}")]) from None
    try:
        model = auto_cls.from_pretrained(
            name_or_path, revision=revision, trust_remote_code=trust_remote_code, **load_options
        )
        tokenizer = AutoTokenizer.from_pretrained(
            name_or_path, revision=revision, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{name_or_path}: cannot load model or tokenizer: {exc}") from None
    model.eval()
    logger.info("loaded %s (%s, task %s)", name_or_path, config.model_type, task)
    return LoadedModel(model=model, tokenizer=tokenizer, task=task, name_or_path=name_or_path, revision=revision)
