"""Latency: measuring models (a fresh process per model and round), comparing them in interleaved rounds, and
where timing lands in the report.

- :mod:`~quantkit.latency.measurement`: one measurement and its record (:class:`RuntimeStats`), the real
  :class:`SubprocessTimer`, :func:`default_threads`, busy-CPU detection (:func:`busy_warning`);
- :mod:`~quantkit.latency.comparison`: interleaved rounds (:func:`measure`), per-round ratios and their
  intervals (:func:`ratio_estimate`), the decision rules (:func:`separable`, :func:`rank`, stop rules,
  :func:`speedup_warning`) and the FP32-vs-int8 :func:`side_by_side`;
- :mod:`~quantkit.latency.report`: the report's ``timing`` section, its warnings and the card's lines.

``python -m quantkit.latency`` is the measuring child process (:mod:`quantkit.latency.__main__`).
"""

from __future__ import annotations

from .comparison import (
    CONFIDENCE,
    MAX_SPREAD,
    MIN_DECISION_ROUNDS,
    MIN_EFFECT,
    RatioEstimate,
    Ranking,
    Rounds,
    SideBySide,
    Timer,
    done_when_ranked,
    done_when_separable,
    measure,
    rank,
    ratio_estimate,
    separable,
    side_by_side,
    speedup_warning,
)
from .measurement import (
    RuntimeStats,
    SessionTimer,
    SubprocessTimer,
    busy_warning,
    cpu_session,
    default_threads,
    measure_once,
    measure_runtime,
    measure_side_by_side,
)
from .report import add_timing, timing_card_lines, timing_warnings

__all__ = [
    "CONFIDENCE",
    "MAX_SPREAD",
    "MIN_DECISION_ROUNDS",
    "MIN_EFFECT",
    "RatioEstimate",
    "Ranking",
    "Rounds",
    "RuntimeStats",
    "SideBySide",
    "SessionTimer",
    "SubprocessTimer",
    "Timer",
    "add_timing",
    "busy_warning",
    "cpu_session",
    "default_threads",
    "done_when_ranked",
    "done_when_separable",
    "measure",
    "measure_once",
    "measure_runtime",
    "measure_side_by_side",
    "rank",
    "ratio_estimate",
    "separable",
    "side_by_side",
    "speedup_warning",
    "timing_card_lines",
    "timing_warnings",
]
