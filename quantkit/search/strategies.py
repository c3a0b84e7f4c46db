"""Search strategies behind a registry, driving a :class:`TrialRunner` through a :class:`SearchContext`.

- ``basic``: INC 2.x's loop: the spec's config first, then the space in order; stop at the first
  candidate within tolerance (INC's ``TuningMonitor.need_stop`` decides).
- ``fastest`` (default): spend the budget, keep the best candidate within tolerance by the
  objective (latency measured on this CPU by default); prune a candidate as soon as it cannot
  win; when none passes, run ``fallback`` from the closest candidates.
- ``fallback``: rank the quantized nodes by sensitivity and greedily return the most sensitive
  ones to FP32, keeping a step only when it reduces the loss (NNCF-style step back), until the
  tolerance is met.

Where INC's machinery is not enough: its monitor stops at the first passing config and ranks by
accuracy only (no latency objective, no pruning), keeps no persistent history (no resume), and
has no node fallback for ONNX since 3.x. quantkit keeps those parts itself and uses INC for the
config expansion and the tolerance verdict of ``basic``.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import QuantkitError, TimingMismatchError
from ..executors.base import Executor, JobResult, LocalExecutor, TrialJob, cpu_signature, node_hardware
from ..latency import MIN_DECISION_ROUNDS, Ranking, Rounds, rank
from ..registry import Registry
from ..spec import QuantizationConfig
from .space import SearchPoint, config_hash
from .store import Trial, TrialStore
from .tolerance import Tolerance


def _config_of(data: dict[str, Any]) -> QuantizationConfig:
    """A trial's config back as an object (a SearchPoint when it carries a graph optimization level)."""
    return SearchPoint.model_validate(data) if "optimize" in data else QuantizationConfig.model_validate(data)

logger = logging.getLogger(__name__)

__all__ = [
    "STRATEGIES",
    "Measurement",
    "PruneHint",
    "TrialOutcome",
    "TrialRunner",
    "SearchContext",
    "SearchOutcome",
    "Strategy",
    "run_search",
]

STRATEGIES: Registry[type["Strategy"]] = Registry("strategy")


@dataclass
class Measurement:
    metric: float
    latency_ms: float | None = None
    size_bytes: int | None = None


@dataclass
class PruneHint:
    """What a candidate must reach to still matter; the runner may stop early when it cannot."""

    required_metric: float | None = None
    higher_is_better: bool = True
    max_latency_ms: float | None = None
    #: The best passing candidate's model, so the runner can time a candidate against it side by side.
    best_model_path: str | None = None


@dataclass
class TrialOutcome:
    status: str  # "ok" | "pruned"
    metric: float | None
    latency_ms: float | None
    size_bytes: int | None
    model_path: str | None = None
    note: str | None = None


class TrialRunner(Protocol):
    """Quantizes and evaluates candidates (the real one: :mod:`quantkit.search.runner`)."""

    def baseline(self) -> Measurement: ...

    def run(self, config: QuantizationConfig, hint: PruneHint) -> TrialOutcome: ...

    def sensitivity(self, config: QuantizationConfig) -> list[tuple[str, float]]: ...


@dataclass
class SearchOutcome:
    baseline: Measurement
    trials: list[Trial]
    chosen: Trial | None
    closest: Trial | None
    reason: str
    fallback_nodes: list[dict[str, Any]] = field(default_factory=list)
    #: How latency decided among the leading candidates (:meth:`quantkit.latency.Ranking.to_dict`), if it did.
    latency_decision: dict[str, Any] | None = None


class SearchContext:
    """Budget, trial store, tolerance and objective shared by the strategies."""

    def __init__(
        self,
        runner: TrialRunner,
        tolerance: Tolerance,
        store: TrialStore,
        run_key: str,
        *,
        objective: str = "latency",
        max_trials: int = 20,
        timeout: float | None = None,
        prune: bool = True,
        on_trial: Callable[[Trial, "SearchContext"], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        executor: Executor | None = None,
    ) -> None:
        self.runner = runner
        self.tolerance = tolerance
        self.store = store
        self.run_key = run_key
        self.objective = objective
        self.max_trials = max_trials
        self.prune = prune
        self.on_trial = on_trial
        self.clock = clock
        self.deadline = clock() + timeout if timeout else None
        self.trials: list[Trial] = []
        self.fallback_nodes: list[dict[str, Any]] = []
        self.latency_decision: dict[str, Any] | None = None
        #: Where trials run (local: this process); ``parallel`` candidates are decided at once.
        self.executor: Executor = executor or LocalExecutor()
        self.parallel = max(1, int(self.executor.parallel_trials))
        #: The CPU every latency of this search is measured on (the driver's): others are never compared.
        here = node_hardware()
        self.timing_cpu = cpu_signature(here)
        cached = store.get_baseline(run_key)
        timed_on = (cached or {}).get("timed_on")
        if cached is not None and timed_on and cpu_signature(timed_on) != self.timing_cpu:
            logger.warning("the stored FP32 baseline was timed on %s; measuring it again on %s", timed_on.get("model"),
                           here["model"])
            cached = None
        if cached is None:
            measured = runner.baseline()
            cached = {"metric": measured.metric, "latency_ms": measured.latency_ms, "size_bytes": measured.size_bytes,
                      "timed_on": here}
            store.put_baseline(run_key, cached)
        self.baseline = Measurement(**{k: v for k, v in cached.items() if k != "timed_on"})

    # ------------------------------------------------------------------ budget
    def budget_left(self, pending: int = 0) -> bool:
        """Whether another trial may start (``pending``: trials of the batch being planned, not told yet)."""
        if len(self.trials) + pending >= self.max_trials:
            return False
        return self.deadline is None or self.clock() < self.deadline

    def budget_reason(self) -> str:
        if len(self.trials) >= self.max_trials:
            return f"max_trials ({self.max_trials}) reached"
        return "timeout reached"

    # ------------------------------------------------------------------ ranking
    def objective_key(self, trial: Trial) -> tuple[float, float]:
        inf = float("inf")
        metric = trial.metric if trial.metric is not None else -inf
        better_metric = -metric if self.tolerance.higher_is_better else metric
        if self.objective == "latency":
            return (trial.latency_ms if trial.latency_ms is not None else inf, better_metric)
        if self.objective == "size":
            return (float(trial.size_bytes) if trial.size_bytes is not None else inf, better_metric)
        return (better_metric, trial.latency_ms if trial.latency_ms is not None else inf)

    def passing(self) -> list[Trial]:
        return [t for t in self.trials if t.status == "ok" and t.passed]

    def best(self) -> Trial | None:
        passing = self.passing()
        return min(passing, key=self.objective_key) if passing else None

    def closest(self) -> Trial | None:
        done = [t for t in self.trials if t.status == "ok" and t.loss is not None]
        return min(done, key=lambda t: (t.loss, self.objective_key(t))) if done else None

    def hint(self) -> PruneHint:
        """What the next candidate must reach to matter. Nothing is pruned before a candidate passes:
        until then every candidate is scored in full, because when none passes the closest ones are
        what ``fallback`` starts from (and what the user is given), and a fallback step is kept when it
        lowers the loss even if it does not reach the tolerance yet."""
        best = self.best() if self.prune else None
        if best is None:
            return PruneHint(higher_is_better=self.tolerance.higher_is_better)
        return PruneHint(
            required_metric=self.tolerance.required(self.baseline.metric),
            higher_is_better=self.tolerance.higher_is_better,
            max_latency_ms=best.latency_ms if self.objective == "latency" else None,
            best_model_path=best.model_path if self.objective == "latency" else None,
        )

    # ------------------------------------------------------------------ trials
    def prepare(self, candidates: list[QuantizationConfig]) -> None:
        """Once per search, before any trial: the executor ships what its workers need."""
        self.executor.prepare(self.runner, candidates)

    def evaluate(self, config: QuantizationConfig, origin: str, note: str | None = None) -> Trial | None:
        """Run (or reuse from the store) one candidate; ``None`` when the budget is spent."""
        return self.evaluate_batch([(config, origin, note)])[0]

    def evaluate_batch(self, items: list[tuple[QuantizationConfig, str, str | None]]) -> list[Trial | None]:
        """Run (or reuse) candidates as one batch: all get the pruning hint of the state before the batch,
        the executor runs the new ones (concurrently on a cluster), and the results are told — stored,
        appended, reported — in ``items`` order, whatever order they finished in. ``None`` for each
        candidate the budget does not reach. A batch of one is the sequential search."""
        out: list[Trial | None] = [None] * len(items)
        planned: list[tuple[int, str, QuantizationConfig, str, str | None, Trial | None]] = []
        batch: dict[str, int] = {}
        exhausted = False
        for pos, (config, origin, note) in enumerate(items):
            h = config_hash(config)
            known = next((t for t in self.trials if t.config_hash == h), None)
            if known is not None:
                out[pos] = known
                continue
            if h in batch:
                continue  # the same candidate twice in one batch: filled in below
            if exhausted or not self.budget_left(len(planned)):
                exhausted = True
                continue
            stored = self.store.get(self.run_key, h)
            if stored is not None and not self._comparable(stored):
                stored = None
            batch[h] = pos
            planned.append((pos, h, config, origin, note, stored))
        to_run = [p for p in planned if p[5] is None]
        results: list[JobResult] = []
        if to_run:
            hint = self.hint()
            results = self.executor.run_trials(self.runner, [TrialJob(p[2], hint) for p in to_run])
            if len(results) != len(to_run):
                raise RuntimeError(f"executor {self.executor.name!r} returned {len(results)} results for "
                                   f"{len(to_run)} trials")
        told = iter(results)
        for pos, h, config, origin, note, stored in planned:
            if stored is None:
                trial = self._record(config, h, origin, note, next(told))
                self.store.put(self.run_key, trial)
            else:
                trial = stored
                logger.info("trial %s reused from %s", h, self.store.path)
                if trial.status == "ok" and trial.metric is not None:  # the tolerance may have changed since
                    trial.loss = self.tolerance.loss(self.baseline.metric, trial.metric)
                    trial.passed = self.tolerance.passes(self.baseline.metric, trial.metric)
            self.trials.append(trial)
            out[pos] = trial
            if self.on_trial is not None:
                self.on_trial(trial, self)
        for pos, (config, _, _) in enumerate(items):  # repeats inside the batch
            if out[pos] is None and config_hash(config) in batch:
                out[pos] = out[batch[config_hash(config)]]
        return out

    def _comparable(self, stored: Trial) -> bool:
        """A stored trial is reused only when its latency was measured on this search's CPU type."""
        timed_on = (stored.hardware or {}).get("timed_on")
        if stored.latency_ms is None or not timed_on or cpu_signature(timed_on) == self.timing_cpu:
            return True
        logger.warning("trial %s was timed on %s (%s), not on this CPU: running it again here", stored.config_hash,
                       timed_on.get("model"), timed_on.get("node"))
        return False

    def _record(self, config: QuantizationConfig, h: str, origin: str, note: str | None, result: JobResult) -> Trial:
        """The trial a job's result makes (a user error stops everything; any other error is a failed trial)."""
        idx = len(self.trials)
        trial = Trial(idx=idx, origin=origin, config_hash=h, config=config.model_dump(mode="json"), status="ok",
                      note=note, hardware=result.hardware or None)
        exc = result.error
        if exc is not None:
            if isinstance(exc, QuantkitError) and exc.exit_code == 2:  # a user error (bad data, missing file)
                raise exc
            trial.status = "failed"
            trial.error = str(exc) if isinstance(exc, QuantkitError) else f"{type(exc).__name__}: {exc}"
        else:
            out: TrialOutcome = result.outcome
            trial.status, trial.metric, trial.latency_ms = out.status, out.metric, out.latency_ms
            trial.size_bytes, trial.model_path = out.size_bytes, out.model_path
            trial.note = "; ".join(x for x in (note, out.note) if x) or None
            if out.status == "ok" and out.metric is not None:
                trial.loss = self.tolerance.loss(self.baseline.metric, out.metric)
                trial.passed = self.tolerance.passes(self.baseline.metric, out.metric)
            timed_on = (result.hardware or {}).get("timed_on")
            if out.latency_ms is not None and timed_on and cpu_signature(timed_on) != self.timing_cpu:
                raise TimingMismatchError(
                    f"trial {idx} was timed on {timed_on.get('model')} ({timed_on.get('node')}) but this search's "
                    f"latencies are measured on {self.timing_cpu[0]}: latencies from different CPU types are not "
                    "compared", hint="time candidates on the driver (quantkit's trial runner does) or run the "
                    "cluster on nodes of one CPU type")
        extra = result.note or (f"retried after a lost worker ({result.attempts} attempts)" if result.attempts > 1
                                else None)
        if extra:
            trial.note = "; ".join(x for x in (trial.note, extra) if x)
        trial.duration_s = result.duration_s
        if trial.status == "failed":
            logger.warning("trial %d failed: %s", idx, trial.error)
        return trial


class Strategy(ABC):
    """Template: :meth:`search` checks and reports, :meth:`_search` picks the trials."""

    name: str = ""

    def search(self, ctx: SearchContext, candidates: list[QuantizationConfig]) -> SearchOutcome:
        if not candidates:
            raise ValueError("the search space is empty")
        ctx.prepare(candidates)
        chosen, reason = self._search(ctx, candidates)
        closest = ctx.closest() if chosen is None else None
        if chosen is None and not reason:
            reason = "no candidate within tolerance"
        return SearchOutcome(ctx.baseline, list(ctx.trials), chosen, closest, reason, list(ctx.fallback_nodes),
                             ctx.latency_decision)

    @abstractmethod
    def _search(self, ctx: SearchContext, candidates: list[QuantizationConfig]) -> tuple[Trial | None, str]:
        """Run trials through ``ctx``; return the chosen trial (or None) and why."""


@STRATEGIES.register("basic")
class BasicStrategy(Strategy):
    """First candidate within tolerance, in space order (INC 2.x behaviour, INC's monitor decides)."""

    name = "basic"

    def _search(self, ctx: SearchContext, candidates: list[QuantizationConfig]) -> tuple[Trial | None, str]:
        monitor = ctx.tolerance.monitor(max_trials=min(ctx.max_trials, len(candidates)))
        monitor.set_baseline(ctx.baseline.metric)
        for start in range(0, len(candidates), ctx.parallel):
            chunk = candidates[start: start + ctx.parallel]
            for config, trial in zip(chunk, ctx.evaluate_batch([(c, "space", None) for c in chunk])):
                if trial is None:
                    return None, ""
                if trial.status == "ok" and trial.metric is not None:
                    if monitor.add(trial.idx, trial.metric, config) and trial.passed:
                        return trial, f"first candidate within tolerance (trial {trial.idx}, basic strategy)"
                    if monitor.need_stop():
                        return None, ""
        return None, ""


@STRATEGIES.register("fastest")
class FastestStrategy(Strategy):
    """Best candidate within tolerance by the objective over the whole budget; fallback when none passes."""

    name = "fastest"

    def _search(self, ctx: SearchContext, candidates: list[QuantizationConfig]) -> tuple[Trial | None, str]:
        for start in range(0, len(candidates), ctx.parallel):
            chunk = candidates[start: start + ctx.parallel]
            if None in ctx.evaluate_batch([(c, "space", None) for c in chunk]):
                break
        ranking = self._confirm(ctx)
        best = ctx.best()
        if ranking is not None:
            best = next(t for t in ctx.passing() if t.config_hash == ranking.winner)
            n = len(ctx.passing())
            return best, (f"trial {best.idx} of {n} candidate(s) within tolerance, timed side by side with the "
                          f"leading ones: {ranking.reason} (fastest strategy)")
        if best is None and ctx.budget_left():
            closest = sorted(
                (t for t in ctx.trials if t.status == "ok" and t.loss is not None),
                key=lambda t: (t.loss, ctx.objective_key(t)),
            )
            fallback = FallbackStrategy()
            for trial in closest[: self.fallback_candidates]:
                found = fallback.fallback_from(ctx, _config_of(trial.config))
                if found is not None:
                    break
            best = ctx.best()
        if best is None:
            return None, ""
        n = len(ctx.passing())
        return best, f"lowest {ctx.objective} of {n} candidate(s) within tolerance (trial {best.idx}, fastest strategy)"

    fallback_candidates = 2
    confirm_top = 3

    def _confirm(self, ctx: SearchContext) -> Ranking | None:
        """Re-time the leading passing candidates side by side and rank them with
        :func:`quantkit.latency.rank`, so noise does not pick the winner (None: latency did not decide).

        ``confirm_latency`` returns :class:`~quantkit.latency.Rounds` keyed by config hash; a plain
        ``{hash: ms}`` is taken as exact (noise-free) timings."""
        confirm = getattr(ctx.runner, "confirm_latency", None)
        passing = sorted(ctx.passing(), key=ctx.objective_key)[: self.confirm_top]
        if ctx.objective != "latency" or confirm is None or len(passing) < 2:
            return None
        timed = confirm([_config_of(t.config) for t in passing])
        rounds = timed if isinstance(timed, Rounds) else Rounds(
            {h: [float(v)] * MIN_DECISION_ROUNDS for h, v in timed.items()})
        labels = [t.config_hash for t in passing if t.config_hash in rounds.times]
        if len(labels) < 2:
            return None
        for trial in passing:
            if trial.config_hash in rounds.times:
                new = rounds.median_ms(trial.config_hash)
                trial.latency_ms = new
                trial.note = "; ".join(x for x in (trial.note, f"confirmed p50 {new:.1f} ms over "
                                                   f"{len(rounds.times[trial.config_hash])} round(s)") if x)
                ctx.store.put(ctx.run_key, trial)
        named = {f"trial {t.idx}": t for t in passing if t.config_hash in labels}
        rounds = Rounds({name: rounds.times[t.config_hash] for name, t in named.items()})
        ranking = rank(rounds, list(named), accuracy={n: t.metric for n, t in named.items() if t.metric is not None},
                       higher_is_better=ctx.tolerance.higher_is_better,
                       size={n: t.size_bytes for n, t in named.items() if t.size_bytes is not None})
        ctx.latency_decision = ranking.to_dict()
        ranking.winner = named[ranking.winner].config_hash
        if ranking.tied:
            logger.warning("latency cannot tell the leading candidates apart: %s", ranking.reason)
        return ranking


@STRATEGIES.register("fallback")
class FallbackStrategy(Strategy):
    """Greedy per-node FP32 fallback, most sensitive node first, with step back."""

    name = "fallback"
    max_nodes = 12

    def _search(self, ctx: SearchContext, candidates: list[QuantizationConfig]) -> tuple[Trial | None, str]:
        found = self.fallback_from(ctx, candidates[0])
        if found is None:
            return None, ""
        return found, f"within tolerance after returning {len(ctx.fallback_nodes)} node(s) to FP32 (trial {found.idx})"

    def fallback_from(self, ctx: SearchContext, config: QuantizationConfig) -> Trial | None:
        current = ctx.evaluate(config, "fallback-start")
        if current is None or current.status != "ok":
            return None
        if current.passed:
            return current
        try:
            ranked = ctx.runner.sensitivity(config)
        except QuantkitError:
            raise
        except Exception as exc:  # noqa: BLE001
            logger.warning("sensitivity analysis failed: %s", exc)
            return None
        excluded = list(config.nodes_to_exclude)
        accepted: list[dict[str, Any]] = []
        for node, score in ranked[: self.max_nodes]:
            if node in excluded:
                continue
            candidate = config.model_copy(update={"nodes_to_exclude": [*excluded, node]})
            trial = ctx.evaluate(candidate, "fallback", note=f"{node} -> FP32 (sensitivity {score:.3g})")
            if trial is None:
                break
            if trial.status == "ok" and trial.loss is not None and current.loss is not None and trial.loss < current.loss:
                accepted.append({
                    "node": node,
                    "sensitivity": score,
                    "metric_gain": (trial.metric or 0.0) - (current.metric or 0.0),
                    "latency_cost_ms": (trial.latency_ms - current.latency_ms)
                    if trial.latency_ms is not None and current.latency_ms is not None else None,
                    "trial": trial.idx,
                })
                excluded.append(node)
                config, current = candidate, trial
                if current.passed:
                    break
            else:
                logger.info("fallback of %s did not help; stepping back", node)
        ctx.fallback_nodes = accepted
        return current if current.passed else None


def run_search(strategy: str, ctx: SearchContext, candidates: list[QuantizationConfig], **options: Any) -> SearchOutcome:
    impl = STRATEGIES.get(strategy)()
    for key, value in options.items():
        setattr(impl, key, value)
    return impl.search(ctx, candidates)
