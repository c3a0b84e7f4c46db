"""Executors: where a search's trials and an evaluation's shards run — ``local`` (this process, the
default) or ``ray`` (a Ray cluster, the optional ``quantkit[ray]`` extra, imported on first use).

>>> from quantkit.executors import EXECUTORS
>>> EXECUTORS.names()
['local', 'ray']
"""

from __future__ import annotations

from .base import (EXECUTORS, Executor, JobResult, LocalExecutor, TrialJob, cpu_signature, make_executor, node_hardware,
                   use_executor)
from ..spec import EXECUTOR_TYPES, ExecutorSpec, ShardExecutorSpec

__all__ = [
    "EXECUTORS",
    "EXECUTOR_TYPES",
    "Executor",
    "ExecutorSpec",
    "ShardExecutorSpec",
    "JobResult",
    "LocalExecutor",
    "TrialJob",
    "cpu_signature",
    "make_executor",
    "node_hardware",
    "ray_missing",
    "use_executor",
]


def ray_missing() -> str | None:
    """None when Ray can be imported, else why not (the pre-flight check reports it)."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        return "Ray is not installed"
    return None
