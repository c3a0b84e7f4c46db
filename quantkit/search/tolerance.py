"""Accuracy-tolerance bookkeeping on top of Intel Neural Compressor's tuning monitor.

INC's ``TuningMonitor`` decides "within tolerance" as ``result >= baseline * (1 - tolerable_loss)``:
relative loss of a higher-is-better metric only. quantkit feeds it a normalised score so the same
monitor is right for lower-is-better metrics and absolute tolerances too: with ``baseline = 1`` and
``result = 1 - loss`` the monitor passes exactly when ``loss <= tolerance``, where ``loss`` is the
metric's degradation in the unit the user asked for.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ..logs import quiet
from ..spec import ToleranceSpec

logger = logging.getLogger(__name__)

__all__ = ["Tolerance"]


@dataclass(frozen=True)
class Tolerance:
    kind: str  # "relative" | "absolute"
    value: float
    higher_is_better: bool = True

    @classmethod
    def from_spec(cls, spec: ToleranceSpec, higher_is_better: bool) -> "Tolerance":
        return cls(spec.type, spec.value, higher_is_better)

    def loss(self, baseline: float, value: float) -> float:
        """Degradation of ``value`` vs ``baseline`` (positive = worse), in this tolerance's unit."""
        delta = (baseline - value) if self.higher_is_better else (value - baseline)
        if self.kind == "absolute":
            return delta
        return delta / abs(baseline) if baseline else (0.0 if delta <= 0 else float("inf"))

    def passes(self, baseline: float, value: float) -> bool:
        return self.loss(baseline, value) <= self.value + 1e-12

    def required(self, baseline: float) -> float:
        """The worst metric value still within tolerance."""
        margin = self.value * (abs(baseline) if self.kind == "relative" else 1.0)
        return baseline - margin if self.higher_is_better else baseline + margin

    def describe(self, baseline: float) -> str:
        sign = ">=" if self.higher_is_better else "<="
        unit = f"{self.value:.2%} relative" if self.kind == "relative" else f"{self.value:g} absolute"
        return f"metric {sign} {self.required(baseline):.4f} ({unit} of FP32 {baseline:.4f})"

    # ----------------------------------------------------------------- INC monitor
    def monitor(self, max_trials: int) -> "IncMonitor":
        return IncMonitor(self, max_trials)


class IncMonitor:
    """INC's ``TuningMonitor`` fed normalised scores (see module docstring)."""

    def __init__(self, tolerance: Tolerance, max_trials: int) -> None:
        from neural_compressor.common.base_tuning import TuningConfig, TuningMonitor

        self.tolerance = tolerance
        self._monitor = TuningMonitor(TuningConfig(config_set=[], tolerable_loss=tolerance.value, max_trials=max_trials))
        self._monitor.set_baseline(1.0)
        self.baseline: float | None = None

    def set_baseline(self, baseline: float) -> None:
        self.baseline = baseline

    def add(self, index: int, value: float, config: Any) -> bool:
        """Record a finished trial; return whether it is within tolerance (INC's verdict)."""
        assert self.baseline is not None, "set_baseline first"
        score = 1.0 - self.tolerance.loss(self.baseline, value) + 1e-12
        with quiet():  # INC prints a table per trial; quantkit renders its own
            self._monitor.add_trial_result(index, score, config)
        return score >= 1.0 * (1 - self.tolerance.value)

    def need_stop(self) -> bool:
        """INC's stop rule: the last trial met the goal, or max_trials reached."""
        return bool(self._monitor.need_stop())

    @property
    def trials(self) -> int:
        return self._monitor.get_number_of_trials()
