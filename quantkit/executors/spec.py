"""Spec sections of the executors: ``tuning.executor`` and ``evaluation.executor`` (imported by
:mod:`quantkit.spec`; this module imports nothing from quantkit, so there is no cycle)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["ExecutorSpec", "ShardExecutorSpec", "EXECUTOR_TYPES"]

#: Executor names the spec accepts (the registry in :mod:`quantkit.executors` holds the same ones).
EXECUTOR_TYPES = ("local", "ray")
_ADDRESS = re.compile(r"^(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")


class _ExecutorBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    type: Literal["local", "ray"] = Field(
        "local",
        description="Where the work runs. local: in this process, one piece after another (the default); ray: as "
        "Ray tasks on a Ray cluster (needs the `quantkit[ray]` extra).",
    )
    address: str | None = Field(
        None,
        description="ray: the cluster to use. null: RAY_ADDRESS when set, else a cluster started on this machine "
        "with `ray start`, else a local Ray instance for this run; `auto`: a running cluster (error if none); "
        "`local`: always a new local instance; `ray://host:10001`: Ray Client; `host:6379`: the head's GCS.",
    )

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str | None) -> str | None:
        if value is None or value in ("auto", "local") or _ADDRESS.match(value):
            return value
        raise ValueError(f"{value!r} is not a Ray address; expected auto, local, ray://host:port or host:port")


class ExecutorSpec(_ExecutorBase):
    """``tuning.executor``: where the search's trials are quantized and scored."""

    parallel_trials: int = Field(
        1, ge=1, le=256,
        description="Candidates decided at once: each batch gets the same pruning hint and its results are told in "
        "space order, so the trials and the chosen config do not depend on the executor (the local executor runs a "
        "batch one trial after another). 1 = today's one-at-a-time search.",
    )
    cpus_per_trial: float = Field(
        1.0, gt=0, le=1024,
        description="ray: CPUs reserved for each trial's quantization and scoring on a worker (ONNX Runtime uses "
        "that many threads there). Latency is never measured on a worker: the driver times every candidate after "
        "the batch's accuracy work has finished.",
    )


class ShardExecutorSpec(_ExecutorBase):
    """``evaluation.executor``: where the shards of a sharded evaluation (``evaluation.shards``) run."""

    cpus_per_shard: float = Field(
        1.0, gt=0, le=1024,
        description="ray: CPUs reserved for each shard (ONNX Runtime uses that many threads there).",
    )
