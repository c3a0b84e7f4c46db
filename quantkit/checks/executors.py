"""Stage 1 (files): the executors the spec asks for can run here (``tuning.executor``, ``evaluation.executor``).

Ray is an optional extra: asking for it without it installed is a pre-flight error with the install
command, never an ImportError traceback in the middle of a run.
"""

from __future__ import annotations

from ..backends import BACKENDS, backend_class
from ..executors import ray_missing
from ..executors.ray_cluster import INSTALL_HINT
from ..resolve import search_backends
from .base import CheckContext, Problem, check, error, warning

__all__ = ["check_executors"]


@check("files.executors", stage="files")
def check_executors(ctx: CheckContext) -> list[Problem]:
    """The ray executor is installed when asked for, and can run what the spec searches."""
    spec, problems = ctx.spec, []
    tuning = spec.tuning if ctx.tune else None
    sharded = (spec.evaluation.shards or 1) > 1
    wanted: dict[str, str | None] = {}
    if tuning is not None and tuning.executor.type == "ray":
        wanted["tuning.executor"] = tuning.executor.address
    if spec.evaluation.executor.type == "ray":
        if sharded:
            wanted["evaluation.executor"] = spec.evaluation.executor.address
        else:
            problems.append(warning("evaluation.executor", "the ray executor scores shards, but evaluation.shards "
                                    "is not above 1: the evaluation runs here, unsharded",
                                    "set evaluation.shards (e.g. the number of Ray workers)"))
    if wanted:
        why = ray_missing()
        if why is not None:
            for key in wanted:
                problems.append(error(f"{key}.type", f"{why}: the ray executor cannot run", INSTALL_HINT))
    if len(set(wanted.values())) > 1:
        problems.append(error("evaluation.executor.address", f"tuning.executor and evaluation.executor name different "
                              f"Ray clusters ({' vs '.join(str(a) for a in wanted.values())}); one run talks to one",
                              "give both the same address (or leave one null)"))
    if tuning is not None and tuning.executor.type == "ray":
        backends = search_backends(spec)
        approaches = {spec.quantization.approach, *tuning.space.get("approach", [])}
        local_only = sorted(b for b in backends if b in BACKENDS and not backend_class(b).runs_on_workers)
        if local_only or "qat" in approaches:
            what = [f"backend {b}" for b in local_only] + (["approach qat"] if "qat" in approaches else [])
            problems.append(error("tuning.executor.type", f"trials of {' and '.join(what)} quantize the PyTorch "
                                  "model, which is not shipped to Ray workers",
                                  "use tuning.executor.type: local for those searches"))
    if tuning is not None and tuning.executor.type == "local" and tuning.executor.parallel_trials > 1:
        problems.append(warning("tuning.executor.parallel_trials", f"the local executor runs the "
                                f"{tuning.executor.parallel_trials} trials of a batch one after another (the search "
                                "only shares pruning hints per batch, as a Ray run with the same setting would)",
                                "use tuning.executor.type: ray to run them at once, or parallel_trials: 1"))
    return problems
