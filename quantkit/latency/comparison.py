"""Comparing latencies: interleaved rounds, per-round ratios with their intervals, and the decision rules.

Every latency that decides something or is reported goes through here:

- models are timed **interleaved**, one round after another (the order rotates each round so no model
  always runs first), each round of each model in a fresh process (:class:`~quantkit.latency.measurement.SubprocessTimer`);
- what is compared is the **per-round ratio** ``a / b`` of two models timed in the same round, so a
  machine that slows down for a while slows both sides of the ratio alike;
- a ratio is reported as its median over rounds with an **interval** (:func:`ratio_estimate`): an
  order-statistic confidence interval of the median (the k-th smallest and k-th largest ratio, with
  ``k`` the largest for which the interval covers the median with probability ≥ 90%; min–max when
  there are too few rounds for that);
- two models are **separable** when the interval of their ratio lies wholly beyond ``1 ± min_effect``
  after at least :data:`MIN_DECISION_ROUNDS` rounds (:func:`separable`): the fewest rounds whose min–max
  interval reaches :data:`CONFIDENCE` (5 for 90%; 3 rounds all on one side of 1 happen by chance one
  time in four). Anything else is a tie: nothing is pruned on it and no winner is claimed on it;
- measurement is **adaptive** (:func:`measure`): rounds are added until the decision at hand is
  separable or ``max_rounds`` is spent; then the caller warns ("timings unreliable: ...").

A :class:`Timer` is any callable ``timer(label, path) -> ms`` that times one model once; tests inject
fake ones, so the rules above are tested without touching the CPU.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .measurement import SubprocessTimer, busy_warning

logger = logging.getLogger(__name__)
#: One line per timing round: the CLI shows it unless --no-progress (library users: configure it, or not).
progress_log = logging.getLogger("quantkit.progress")

__all__ = [
    "MIN_DECISION_ROUNDS",
    "MIN_EFFECT",
    "CONFIDENCE",
    "MAX_SPREAD",
    "Timer",
    "RatioEstimate",
    "ratio_estimate",
    "separable",
    "Rounds",
    "measure",
    "speedup_warning",
    "Ranking",
    "rank",
    "done_when_ranked",
    "done_when_separable",
    "SideBySide",
    "side_by_side",
]

#: Coverage asked of the order-statistic interval of the median, and of every decision taken on it.
CONFIDENCE = 0.90


def _rounds_for(confidence: float) -> int:
    """The fewest rounds whose min–max interval covers the median with probability >= ``confidence``
    (1 - 2·0.5^n: 3 rounds 75%, 4 rounds 87.5%, 5 rounds 93.75%)."""
    n = 1
    while 1 - 2 * 0.5**n < confidence:
        n += 1
    return n


#: Fewer rounds than this never decide anything nor establish a speed-up's sign: their widest interval
#: (min–max) covers the median with less than :data:`CONFIDENCE` probability.
MIN_DECISION_ROUNDS = _rounds_for(CONFIDENCE)
#: Differences under 2% are not worth a choice: the more accurate (then smaller) model is kept instead.
MIN_EFFECT = 0.02
#: A reported ratio whose interval is wider than this (high / low) is flagged as unreliable.
MAX_SPREAD = 1.5


class Timer(Protocol):
    """Times one model once (one round) and returns its latency in ms (the round's p50)."""

    def __call__(self, label: str, path: Path) -> float: ...


@dataclass(frozen=True)
class RatioEstimate:
    """Median of per-round ratios with an interval: ``low <= median <= high`` over ``rounds`` rounds."""

    median: float
    low: float
    high: float
    rounds: int

    @property
    def spread(self) -> float:
        """high / low (1.0 = every round agreed)."""
        return self.high / self.low if self.low > 0 else math.inf

    def describe(self) -> str:
        return f"{self.median:.2f}x ({self.low:.2f}-{self.high:.2f}, {self.rounds} round{'s' * (self.rounds != 1)})"

    def to_dict(self) -> dict[str, Any]:
        return {"median": self.median, "low": self.low, "high": self.high, "rounds": self.rounds}


def _binom_cdf(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2)."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2**n


def ratio_estimate(ratios: Sequence[float], confidence: float = CONFIDENCE) -> RatioEstimate:
    """Median of ``ratios`` and the order-statistic interval ``[x_(k), x_(n-k+1)]`` of the median.

    ``k`` is the largest rank whose interval covers the true median with probability ≥ ``confidence``
    (1 - 2·P(Bin(n, ½) ≤ k-1)); with too few rounds for that, ``k = 1`` (min–max).
    """
    xs = sorted(float(r) for r in ratios)
    n = len(xs)
    if n == 0:
        raise ValueError("no rounds to estimate from")
    mid = n // 2
    median = xs[mid] if n % 2 else math.sqrt(xs[mid - 1] * xs[mid])  # geometric: ratios are multiplicative
    k = 1
    while k + 1 <= (n + 1) // 2 and 1 - 2 * _binom_cdf(k, n) >= confidence:
        k += 1
    return RatioEstimate(median, xs[k - 1], xs[n - k], n)


def separable(estimate: RatioEstimate | None, min_effect: float = MIN_EFFECT) -> bool:
    """Whether the ratio is told apart from 1: enough rounds and the whole interval beyond ``1 ± min_effect``."""
    if estimate is None or estimate.rounds < MIN_DECISION_ROUNDS:
        return False
    return estimate.high < 1 - min_effect or estimate.low > 1 + min_effect


@dataclass
class Rounds:
    """Per-round latencies (ms) of models timed interleaved: ``times[label][i]`` is round ``i``."""

    times: dict[str, list[float]] = field(default_factory=dict)

    @property
    def rounds(self) -> int:
        return min((len(v) for v in self.times.values()), default=0)

    def median_ms(self, label: str) -> float:
        xs = sorted(self.times[label])
        return xs[(len(xs) - 1) // 2]

    def ratio(self, a: str, b: str) -> RatioEstimate:
        """``a / b`` per round (rounds where both were timed)."""
        pairs = zip(self.times[a], self.times[b])
        return ratio_estimate([x / y for x, y in pairs if y > 0])

    def to_dict(self) -> dict[str, list[float]]:
        return {k: [round(x, 4) for x in v] for k, v in self.times.items()}


def measure(
    paths: Mapping[str, str | Path],
    timer: Timer,
    *,
    min_rounds: int = MIN_DECISION_ROUNDS,
    max_rounds: int = 9,
    done: Callable[[Rounds], bool] | None = None,
    prior: Rounds | None = None,
    what: str | None = None,
) -> Rounds:
    """Time ``paths`` in interleaved rounds (order rotated each round) until ``done(rounds)`` after
    ``min_rounds``, or ``max_rounds`` are spent. Without ``done``, exactly ``min_rounds`` rounds.

    ``prior``: rounds of the same models already timed the same way (the hardware probe's), counted toward
    both limits; at least one new round is timed. Each round is logged to ``quantkit.progress`` (``what``
    names the measurement), and each round added past ``min_rounds`` says why (``-v``)."""
    labels = list(paths)
    max_rounds = max(max_rounds, min_rounds)
    out = Rounds({label: list(prior.times.get(label, [])) if prior else [] for label in labels})
    start = out.rounds
    for label in labels:
        del out.times[label][start:]
    name = what or ", ".join(labels)
    for r in range(start, max(max_rounds, start + 1)):
        if r >= min_rounds and r > start:
            logger.info("%s: round %d added: %s", name, r + 1, _undecided(out, labels))
        progress_log.info("timing %s: round %d (at most %d)", name, r + 1, max(max_rounds, start + 1))
        shift = r % len(labels)
        for label in labels[shift:] + labels[:shift]:
            out.times[label].append(float(timer(label, Path(paths[label]))))
        if r + 1 >= min_rounds and (done is None or done(out)):
            break
    logger.debug("timed %s over %d round(s) (%d from before)", ", ".join(labels), out.rounds, start)
    return out


def _undecided(rounds: Rounds, labels: Sequence[str]) -> str:
    """Why another round is timed: each label's ratio to the first so far."""
    base = labels[0]
    parts = [f"{lab} / {base} {rounds.ratio(lab, base).describe()}" for lab in labels[1:]]
    return "; ".join(parts) + f" (a decision needs >= {MIN_DECISION_ROUNDS} rounds and an interval clear of 1 ± " \
        f"{MIN_EFFECT:.0%})"


def speedup_warning(estimate: RatioEstimate, what: str = "int8 / FP32") -> str | None:
    """"timings unreliable: ..." when the ratio's sign (faster or slower) is not established or it
    varied too much between rounds; ``None`` when the measurement is clear."""
    if estimate.rounds < MIN_DECISION_ROUNDS:
        return (f"timings unreliable: {what} latency {estimate.describe()}: fewer than "
                f"{MIN_DECISION_ROUNDS} rounds cannot tell faster from slower")
    if not (estimate.high < 1 or estimate.low > 1):
        return (f"timings unreliable: {what} latency {estimate.describe()}: the rounds disagree on whether it "
                "is faster or slower (a busy or throttled CPU?); the speed-up is not established")
    if estimate.spread > MAX_SPREAD:
        return (f"timings unreliable: {what} latency {estimate.describe()} varied more than "
                f"{MAX_SPREAD:.1f}x between rounds (a busy or throttled CPU?)")
    return None


@dataclass
class Ranking:
    """The outcome of :func:`rank`: the winner, why, and which contenders were a tie with the fastest."""

    winner: str
    reason: str
    fastest: str
    tied: list[str]
    ratios: dict[str, RatioEstimate]  # label -> label / fastest

    def to_dict(self) -> dict[str, Any]:
        return {"winner": self.winner, "reason": self.reason, "fastest": self.fastest, "tied": list(self.tied),
                "vs_fastest": {k: v.to_dict() for k, v in self.ratios.items()}}


def rank(
    rounds: Rounds,
    labels: Sequence[str],
    *,
    accuracy: Mapping[str, float] | None = None,
    higher_is_better: bool = True,
    size: Mapping[str, float] | None = None,
    min_effect: float = MIN_EFFECT,
) -> Ranking:
    """The fastest of ``labels`` when it is separably faster than every other; otherwise, among the
    fastest and those that cannot be told apart from it, the more accurate, then the smaller, then
    the lower median. The reason says which rule decided."""
    labels = list(labels)
    fastest = min(labels, key=rounds.median_ms)
    ratios = {lab: rounds.ratio(lab, fastest) for lab in labels if lab != fastest}
    tied = [lab for lab, est in ratios.items() if not separable(est, min_effect)]
    if not tied:
        return Ranking(fastest, f"separably faster than the other {len(ratios)} "
                       f"(next: {min(ratios.values(), key=lambda e: e.median).describe() if ratios else '-'} "
                       "of its latency)", fastest, [], ratios)
    pool = [fastest, *tied]
    acc = accuracy or {}
    sz = size or {}

    def key(lab: str) -> tuple[float, float, float]:
        a = acc.get(lab)
        a_key = (-a if higher_is_better else a) if a is not None else math.inf
        return (a_key, sz.get(lab, math.inf), rounds.median_ms(lab))

    winner = min(pool, key=key)
    k_w, k_f = key(winner), key(fastest)
    if winner == fastest:
        why = "it is also the most accurate (then smallest) of them"
    elif k_w[0] < k_f[0]:
        why = "it is more accurate"
    elif k_w[1] < k_f[1]:
        why = "equally accurate and smaller"
    else:
        why = "equally accurate and as small"
    others = ", ".join(f"{lab} {ratios[lab].describe()}" for lab in tied)
    return Ranking(winner, f"latency cannot separate {fastest} (lowest median) from {others} (within "
                   f"{min_effect:.0%} or noise); chose {winner}: {why}", fastest, tied, ratios)


def done_when_ranked(labels: Sequence[str], min_effect: float = MIN_EFFECT) -> Callable[[Rounds], bool]:
    """A :func:`measure` stop rule: the fastest of ``labels`` is separable from each other one."""

    def done(rounds: Rounds) -> bool:
        fastest = min(labels, key=rounds.median_ms)
        return all(separable(rounds.ratio(lab, fastest), min_effect) for lab in labels if lab != fastest)

    return done


def done_when_separable(a: str, b: str, min_effect: float = MIN_EFFECT) -> Callable[[Rounds], bool]:
    """A :func:`measure` stop rule: ``a / b`` is separable from 1."""
    return lambda rounds: separable(rounds.ratio(a, b), min_effect)


@dataclass
class SideBySide:
    """Models timed interleaved against one baseline: rounds, per-round ratios and warnings."""

    rounds: Rounds
    baseline: str
    ratios: dict[str, RatioEstimate]  # label -> label / baseline
    warnings: list[str]
    #: label -> RuntimeStats of its median round (only with the real :class:`SubprocessTimer`).
    stats: dict[str, Any] = field(default_factory=dict)
    #: A generating model's decode steps timed the same way, after the forward pass (text-generation).
    decode: "SideBySide | None" = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": f"interleaved fresh-process rounds, order rotated each round; ratio = median of per-round "
                      f"ratios to {self.baseline}, interval = order-statistic {CONFIDENCE:.0%} interval of the "
                      "median (min-max when there are few rounds)",
            "rounds": self.rounds.rounds,
            "baseline": self.baseline,
            "ratios": {k: v.to_dict() for k, v in self.ratios.items()},
            "round_ms": self.rounds.to_dict(),
            "warnings": list(self.warnings),
            **({"median_round": {k: v.to_dict() for k, v in self.stats.items()}} if self.stats else {}),
        }


def side_by_side(
    paths: Mapping[str, str | Path],
    latency: Any,
    *,
    baseline: str,
    sequence_length: int | None = None,
    vocab_size: int = 30522,
    timer: Timer | None = None,
    adaptive: bool = True,
    prior: Rounds | None = None,
    what: str | None = None,
    decode: int = 0,
) -> SideBySide:
    """Time ``paths`` interleaved with ``baseline`` (``latency.rounds`` rounds, then more up to
    ``latency.max_rounds`` while a ratio's sign is not established or it spreads too much, when
    ``adaptive``); the ratios and a "timings unreliable" warning for each ratio that stays unclear."""
    real = timer is None
    timer = timer or SubprocessTimer(latency, sequence_length=sequence_length, vocab_size=vocab_size, decode=decode)
    others = [lab for lab in paths if lab != baseline]

    def done(r: Rounds) -> bool:
        return all(speedup_warning(r.ratio(lab, baseline)) is None for lab in others)

    max_rounds = latency.round_budget if adaptive else latency.rounds
    rounds = measure(paths, timer, min_rounds=latency.rounds, max_rounds=max_rounds, done=done, prior=prior,
                     what=what or f"{' vs '.join(paths)} at {latency.batch_size}x{latency.sequence_length or sequence_length}"
                     + (f", {decode} decode steps" if decode else ""))
    ratios = {lab: rounds.ratio(lab, baseline) for lab in others}
    warnings = [w for lab in others if (w := speedup_warning(ratios[lab], f"{lab} / {baseline}"))]
    if real and (w := busy_warning(timer.stats)):  # type: ignore[attr-defined]
        warnings.append(w)
    for w in warnings:  # returned, reported and shown once by the caller (the CLI lists them after its table)
        logger.info("%s", w)
    stats = {lab: timer.median_stats(lab) for lab in paths} if real else {}  # type: ignore[attr-defined]
    return SideBySide(rounds, baseline, ratios, warnings, stats)
