"""The task registry: one module per task (see :class:`quantkit.tasks.base.Task`).

>>> get_task("ner").name
'token-classification'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import RegistryError, SpecError, SpecIssue
from ..registry import Registry
from .base import Columns, MetricInfo, Predictions, RowProblem, Task
from .feature_extraction import FeatureExtraction
from .question_answering import QuestionAnswering
from .text_classification import TextClassification
from .text_generation import TextGeneration
from .token_classification import TokenClassification

__all__ = ["TASKS", "Task", "Columns", "MetricInfo", "Predictions", "RowProblem", "get_task",
           "task_names", "canonical_task", "infer_task_from_architectures", "task_for", "all_metric_names"]

TASKS: Registry[type[Task]] = Registry("task")
for _cls in (TextClassification, TokenClassification, FeatureExtraction, QuestionAnswering, TextGeneration):
    TASKS.register(_cls.name)(_cls)

_ALIASES = {alias: cls.name for name in TASKS.names() for cls in [TASKS.get(name)] for alias in cls.aliases}


def canonical_task(name: str) -> str:
    """A task name or alias → its registered name; unknown names raise :class:`RegistryError`."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    TASKS.get(key)
    return key


def get_task(name: str) -> type[Task]:
    return TASKS.get(canonical_task(name))


def task_names() -> list[str]:
    return TASKS.names()


def all_metric_names() -> list[str]:
    return sorted({m for n in TASKS.names() for m in TASKS.get(n).metrics})


def infer_task_from_architectures(config: Any) -> str | None:
    """The task of a checkpoint from ``config.architectures`` (``BertForTokenClassification`` → token-classification;
    a bare ``BertModel`` → feature-extraction); None when nothing matches."""
    for arch in getattr(config, "architectures", None) or []:
        best = None
        for name in TASKS.names():
            cls = TASKS.get(name)
            for suffix in cls.architecture_suffixes:
                if arch.endswith(suffix) and not any(x in arch for x in cls.architecture_excludes) and (
                        best is None or len(suffix) > best[0]):
                    best = (len(suffix), name)
        if best is not None:
            return best[1]
    return None


def task_for(name: str, model_config: Any = None, options: Any = None, model_dir: str | Path | None = None) -> Task:
    """The task object bound to one model (its config; for sentence encoders, the folder's pooling)."""
    try:
        cls = get_task(name)
    except RegistryError:
        raise SpecError([SpecIssue(None, "model.task", f"quantkit has no task {name!r}; "
                                   f"known: {', '.join(task_names())}")]) from None
    folder = Path(str(model_dir)).expanduser() if model_dir is not None else None
    return cls(model_config, options, folder if folder is not None and folder.is_dir() else None)
