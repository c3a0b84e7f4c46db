"""The executor concept: where a search's trials (and an evaluation's shards) run.

An :class:`Executor` takes a batch of :class:`TrialJob` (a candidate config and the pruning hint it
runs under) and returns one :class:`JobResult` per job, in job order. The driver — the process
running the search — stays the only writer of the trial store, and it tells the results to the
search in that order, so what is chosen does not depend on where the trials ran.

A runner may split a trial in two (``for_workers`` / ``finish_remote``): the part shipped to
workers (quantize and score) and the part the driver runs afterwards (time the candidate), so
latency is measured on one CPU, never beside other work. A runner without that split (the
scripted runners of the tests) runs whole on the workers.
"""

from __future__ import annotations

import logging
import platform
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..registry import Registry

logger = logging.getLogger(__name__)

__all__ = [
    "EXECUTORS",
    "Executor",
    "LocalExecutor",
    "TrialJob",
    "JobResult",
    "cpu_signature",
    "node_hardware",
    "make_executor",
    "use_executor",
]

EXECUTORS: Registry[type["Executor"]] = Registry("executor", lazy={"ray": "quantkit.executors.ray_cluster"})


def cpu_signature(cpu: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    """What makes two latencies comparable: the CPU model and its int8-relevant ISA flags."""
    return str(cpu.get("model", "")), tuple(sorted(cpu.get("features") or ()))


def node_hardware() -> dict[str, Any]:
    """This process's CPU (model, arch, cores, ISA flags) and host name, as recorded per trial."""
    from ..hardware import cpu_info

    info = cpu_info()
    return {"node": platform.node(), "model": info.model, "arch": info.arch, "logical_cores": info.logical_cores,
            "features": list(info.features)}


@dataclass
class TrialJob:
    """One candidate to quantize and evaluate under ``hint`` (a :class:`~quantkit.search.strategies.PruneHint`)."""

    config: Any
    hint: Any


@dataclass
class JobResult:
    """What came back for one job: the runner's outcome or the exception it raised, and where it ran.

    ``hardware``: ``{"scored_on": {...}, "timed_on": {...}}`` (see :func:`node_hardware`); ``attempts``:
    how many times the job was started (2 when a lost worker's trial was retried)."""

    outcome: Any = None
    error: BaseException | None = None
    hardware: dict[str, Any] = field(default_factory=dict)
    attempts: int = 1
    duration_s: float = 0.0
    note: str | None = None


def finish_on_driver(runner: Any, job: TrialJob, partial: Any) -> Any:
    """The driver's part of a split trial (the runner's ``finish_remote``), or the outcome itself."""
    finish = getattr(runner, "finish_remote", None)
    return finish(job.config, job.hint, partial) if finish is not None and hasattr(runner, "for_workers") else partial


class Executor(ABC):
    """Runs batches of trials; a context manager (``open`` connects, ``close`` lets go)."""

    name: str = ""

    def __init__(self, *, parallel_trials: int = 1, cpus_per_trial: float = 1.0, address: str | None = None) -> None:
        self.parallel_trials = parallel_trials
        self.cpus_per_trial = cpus_per_trial
        self.address = address

    def open(self) -> "Executor":
        return self

    def close(self) -> None:
        """Let go of what :meth:`open` took (a cluster connection it made)."""

    def __enter__(self) -> "Executor":
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def prepare(self, runner: Any, configs: Sequence[Any]) -> None:
        """Called once per search with the candidates, before any batch (ship what workers need)."""

    @abstractmethod
    def run_trials(self, runner: Any, jobs: Sequence[TrialJob]) -> list[JobResult]:
        """One result per job, in job order; a job's exception is returned in its result, never raised."""

    def map_shards(self, fn: Callable[..., Any], shared: Any, parts: Sequence[Any], cpus: float = 1.0) -> list[Any]:
        """``[fn(shared, part) for part in parts]`` (in order) — sharded evaluation; ``shared`` goes over once."""
        return [fn(shared, part) for part in parts]

    def describe(self) -> dict[str, Any]:
        return {"type": self.name, "address": self.address, "parallel_trials": self.parallel_trials,
                "cpus_per_trial": self.cpus_per_trial}


@EXECUTORS.register("local")
class LocalExecutor(Executor):
    """Today's behaviour: every trial in this process, one after another (a batch too, in order)."""

    name = "local"

    def run_trials(self, runner: Any, jobs: Sequence[TrialJob]) -> list[JobResult]:
        here = node_hardware()
        results = []
        for job in jobs:
            start = time.perf_counter()
            try:
                outcome = runner.run(job.config, job.hint)
            except Exception as exc:  # noqa: BLE001 - recorded in the result; the search decides
                results.append(JobResult(error=exc, hardware={"scored_on": here, "timed_on": here},
                                         duration_s=time.perf_counter() - start))
                continue
            results.append(JobResult(outcome, hardware={"scored_on": here, "timed_on": here},
                                     duration_s=time.perf_counter() - start))
        return results


def make_executor(spec: Any) -> Executor:
    """The executor a ``tuning.executor`` / ``evaluation.executor`` section names (not yet opened)."""
    cls = EXECUTORS.get(spec.type)
    return cls(parallel_trials=getattr(spec, "parallel_trials", 1),
               cpus_per_trial=getattr(spec, "cpus_per_trial", getattr(spec, "cpus_per_shard", 1.0)),
               address=spec.address)


#: Executors opened by :func:`use_executor` and not closed yet, by (type, address, CPUs per task).
_ACTIVE: dict[tuple[str, str | None, float], Executor] = {}


@contextmanager
def use_executor(spec: Any) -> Iterator[Executor]:
    """The executor ``spec`` names, opened for the duration (or the one already open for the same spec,
    so a run's evaluations share one cluster connection)."""
    ex = make_executor(spec)
    key = (ex.name, ex.address, ex.cpus_per_trial)
    if key in _ACTIVE:
        yield _ACTIVE[key]
        return
    ex.open()
    _ACTIVE[key] = ex
    try:
        yield ex
    finally:
        _ACTIVE.pop(key, None)
        ex.close()
