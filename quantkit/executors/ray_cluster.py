"""The ``ray`` executor: trials and evaluation shards as Ray tasks on a Ray cluster.

- What every trial needs (the FP32 graph and its optimized variants, calibration and evaluation
  data, the spec and the task) is put in the object store once per search (``ray.put``); each
  node fetches it once and writes the graphs to a node-local folder once.
- A trial is one task reserving ``cpus_per_trial`` CPUs: it quantizes and scores the candidate on a
  worker and sends back the metric and the quantized model. The driver then times it (after the
  whole batch's accuracy work has finished, so timing never shares cores with our own work) and
  records the result: the trial store on the driver stays the single source of truth.
- A worker lost mid-trial (process killed, node gone, out of memory) is retried once (``SPREAD``
  scheduling, so on another node when one is free); lost again, the trial is recorded as failed
  and the search goes on.

Ray is imported when the executor opens; without it, a clear :class:`~quantkit.errors.ExecutorUnavailableError`.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import ExecutorError, ExecutorUnavailableError, QuantkitError
from .base import EXECUTORS, Executor, JobResult, TrialJob, finish_on_driver, node_hardware

logger = logging.getLogger(__name__)

__all__ = ["RayExecutor", "import_ray", "INSTALL_HINT"]

INSTALL_HINT = "install the extra: pip install 'quantkit[ray]' (CPU-only Ray, pinned), or use tuning.executor.type: local"

#: Ray exceptions that mean the worker (or its node) went away, not that the trial itself failed.
_LOST = ("WorkerCrashedError", "NodeDiedError", "OutOfMemoryError", "LocalRayletDiedError", "ObjectLostError",
         "OwnerDiedError", "ObjectReconstructionFailedError")


def import_ray() -> Any:
    """The ``ray`` module, or :class:`~quantkit.errors.ExecutorUnavailableError` saying how to get it."""
    try:
        import ray
    except ImportError as exc:
        raise ExecutorUnavailableError(f"the ray executor needs Ray, which is not installed ({exc})",
                                       hint=INSTALL_HINT) from None
    return ray


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling (it goes back to the driver), else an ExecutorError with its text."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any exception type may refuse to pickle
        err = ExecutorError(f"{type(exc).__name__}: {exc}")
        err.exit_code = getattr(exc, "exit_code", 1)
        return err


def _run_on_worker(worker: Any, config: Any, hint: Any) -> dict[str, Any]:
    """The Ray task of one trial: the runner's worker part (``run_remote``) or the whole ``run``."""
    from .._version import __version__

    start = time.perf_counter()
    outcome, error = None, None
    try:
        run = getattr(worker, "run_remote", None) or worker.run
        outcome = run(config, hint)
    except Exception as exc:  # noqa: BLE001 - sent back; the driver records it or stops (user errors)
        error = _portable(exc)
    return {"outcome": outcome, "error": error, "hardware": node_hardware(), "quantkit": __version__,
            "duration_s": time.perf_counter() - start, "pid": os.getpid()}


@EXECUTORS.register("ray")
class RayExecutor(Executor):
    """Trials (and evaluation shards) as Ray tasks; see the module docstring."""

    name = "ray"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._ray: Any = None
        self._owned = False
        self._put_for: Any = None
        self._put_ref: Any = None
        self._remote: dict[Callable[..., Any], Any] = {}

    # ------------------------------------------------------------------ connection
    def open(self) -> "RayExecutor":
        ray = import_ray()
        if not ray.is_initialized():
            shown = self.address or os.environ.get("RAY_ADDRESS") or "a local Ray instance (or a `ray start` cluster)"
            try:
                ray.init(address=self.address, include_dashboard=False, logging_level=logging.WARNING,
                         configure_logging=False)
            except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError, ValueError ... from Ray
                raise ExecutorError(f"cannot connect to the Ray cluster at {shown}: {exc}",
                                    hint="start one with `ray start --head` (see docs/ray.md), set "
                                    "tuning.executor.address / RAY_ADDRESS, or use the local executor; a cluster "
                                    "with token authentication (Ray's default) needs RAY_AUTH_MODE=token and its "
                                    "token here") from None
            self._owned = True
        self._ray = ray
        cpus = ray.cluster_resources().get("CPU", 0)
        logger.info("ray executor: %s CPUs in the cluster, %d trial(s) at once with %s CPU(s) each", cpus,
                    self.parallel_trials, self.cpus_per_trial)
        if cpus < self.cpus_per_trial:
            logger.warning("the Ray cluster has %g CPUs now and each task asks for %g: tasks wait until a node "
                           "with enough CPUs joins", cpus, self.cpus_per_trial)
        return self

    def close(self) -> None:
        if self._ray is not None and self._owned:
            self._ray.shutdown()
        self._ray, self._owned, self._put_for, self._put_ref = None, False, None, None
        self._remote.clear()

    def _need(self) -> Any:
        if self._ray is None:
            self.open()
        return self._ray

    def _fn(self, fn: Callable[..., Any]) -> Any:
        if fn not in self._remote:
            self._remote[fn] = self._need().remote(fn)
        return self._remote[fn]

    def describe(self) -> dict[str, Any]:
        data = super().describe()
        data["address"] = self.address or os.environ.get("RAY_ADDRESS")
        return data

    # ------------------------------------------------------------------ trials
    def _worker_of(self, runner: Any, configs: Sequence[Any]) -> Any:
        """What goes to the workers, put in the object store once (again only when it changed)."""
        split = getattr(runner, "for_workers", None)
        worker = split(list(configs), threads=max(1, int(self.cpus_per_trial))) if split is not None else runner
        if worker is not self._put_for:
            self._put_ref = self._need().put(worker)
            self._put_for = worker
        return self._put_ref

    def prepare(self, runner: Any, configs: Sequence[Any]) -> None:
        self._worker_of(runner, configs)

    def _submit(self, ref: Any, job: TrialJob, retry: bool) -> Any:
        options: dict[str, Any] = {"num_cpus": self.cpus_per_trial, "max_retries": 0}
        if retry:
            options["scheduling_strategy"] = "SPREAD"
        return self._fn(_run_on_worker).options(**options).remote(ref, job.config, job.hint)

    def run_trials(self, runner: Any, jobs: Sequence[TrialJob]) -> list[JobResult]:
        from .._version import __version__

        ray = self._need()
        lost_types = tuple(t for name in _LOST if (t := getattr(ray.exceptions, name, None)) is not None)
        ref = self._worker_of(runner, [job.config for job in jobs])
        pending = {self._submit(ref, job, False): (i, 1) for i, job in enumerate(jobs)}
        results: list[JobResult | None] = [None] * len(jobs)
        lost: dict[int, str] = {}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            i, attempt = pending.pop(ready[0])
            try:
                value = ray.get(ready[0])
            except lost_types as exc:
                why = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                if attempt == 1:
                    logger.warning("trial job %d: worker lost (%s); retrying once on another worker", i, why)
                    lost[i] = why
                    pending[self._submit(ref, jobs[i], True)] = (i, 2)
                    continue
                results[i] = JobResult(error=ExecutorError(f"worker lost twice: {lost[i]}; then {why}"), attempts=2)
                continue
            except ray.exceptions.RayTaskError as exc:  # the task's own code raised outside the runner
                results[i] = JobResult(error=getattr(exc, "cause", None) or exc, attempts=attempt)
                continue
            except ray.exceptions.RayError as exc:  # cancelled, runtime env, ...: this trial fails, the search goes on
                results[i] = JobResult(error=ExecutorError(f"Ray could not run the trial: {type(exc).__name__}: "
                                                           f"{exc}"), attempts=attempt)
                continue
            if value["quantkit"] != __version__:
                raise ExecutorError(f"the worker at {value['hardware']['node']} runs quantkit {value['quantkit']}, "
                                    f"the driver {__version__}", hint="install the same quantkit on every node")
            results[i] = JobResult(value["outcome"], value["error"], {"scored_on": value["hardware"]}, attempt,
                                   value["duration_s"],
                                   f"worker lost ({lost[i]}), retried once" if i in lost else None)
        # Every trial's accuracy work is done: now the driver times them, one after another, in order.
        here = node_hardware()
        split = hasattr(runner, "for_workers")
        for job, result in zip(jobs, results):
            assert result is not None
            if result.error is not None:
                continue
            result.hardware["timed_on"] = here if split else result.hardware["scored_on"]
            if split:
                start = time.perf_counter()
                try:
                    result.outcome = finish_on_driver(runner, job, result.outcome)
                except QuantkitError as exc:
                    result.error = exc
                except Exception as exc:  # noqa: BLE001 - recorded as a failed trial
                    result.error = exc
                result.duration_s += time.perf_counter() - start
        return [r for r in results if r is not None]

    # ------------------------------------------------------------------ shards
    def map_shards(self, fn: Callable[..., Any], shared: Any, parts: Sequence[Any], cpus: float = 1.0) -> list[Any]:
        ray = self._need()
        shared_ref = ray.put(shared)
        remote = self._fn(fn).options(num_cpus=cpus, max_retries=1)
        futures = [remote.remote(shared_ref, part) for part in parts]
        try:
            return ray.get(futures)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            raise (cause if isinstance(cause, QuantkitError) else ExecutorError(f"an evaluation shard failed: {exc}"))
