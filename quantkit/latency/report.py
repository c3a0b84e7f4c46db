"""Timing in the report: the report's ``timing``/``probe`` sections, its warnings, and the model card's lines.

Kept apart from :mod:`quantkit.quantizer` and :mod:`quantkit.card` so that those only call in.
"""

from __future__ import annotations

from typing import Any

__all__ = ["add_timing", "timing_card_lines", "timing_warnings"]


def add_timing(report: dict[str, Any], timed: Any, probe: Any | None = None) -> dict[str, Any]:
    """Put a :class:`quantkit.latency.comparison.SideBySide` (FP32 vs int8) and a probe result into ``report``."""
    est = timed.ratios["int8"]
    result = report.setdefault("result", {})
    result["latency_ratio_p50"] = est.median  # median of per-round int8/FP32 ratios
    result["latency_ratio"] = est.to_dict()
    report["timing"] = timed.to_dict()
    decode = timed.decode
    if decode is not None:  # generation: one new token per timed run, after a prefill
        report["timing"]["decode"] = decode.to_dict()
        result["decode_latency_ratio"] = decode.ratios["int8"].to_dict()
        result["decode_tokens_per_s"] = {label: st.throughput for label, st in decode.stats.items()}
    if probe is not None:
        report["probe"] = probe.to_dict() if hasattr(probe, "to_dict") else probe
    return report


def timing_warnings(report: dict[str, Any]) -> list[str]:
    """Every "timings unreliable" warning in a report (final comparison, then the shape grid)."""
    timing = report.get("timing") or {}
    out = list(timing.get("warnings") or []) + [f"decode: {w}" for w in (timing.get("decode") or {}).get("warnings")
                                                or []]
    for cell in (report.get("shapes") or {}).get("cells", []):
        w = cell.get("timing_warning")
        if w:
            out.append(f"b{cell.get('batch_size')}×s{cell.get('sequence_length')}: {w}")
    return out


def timing_card_lines(report: dict[str, Any]) -> list[str]:
    """A short "Timing" section for the model card: how latency was measured, warnings, the probe."""
    timing = report.get("timing")
    probe = report.get("probe")
    if not timing and not probe:
        return []
    lines = ["## Timing", ""]
    if timing:
        r = (report.get("result") or {}).get("latency_ratio") or {}
        if r:
            lines.append(
                f"INT8 / FP32 latency: **{r['median']:.2f}x** (interval {r['low']:.2f}-{r['high']:.2f}) over "
                f"{r['rounds']} interleaved rounds, each model in a fresh process per round; the ratio is the "
                "median of per-round ratios.")
        for w in timing_warnings(report):
            lines.append(f"\n> **Warning** — {w}")
        lines.append("")
    if probe:
        measured = "measured on this CPU" if probe.get("status") in ("measured", "cached") else "not measured"
        lines.append(f"Default `{probe.get('choice')}`: `{probe.get('chosen')}` ({measured}: {probe.get('reason')}).")
        lines.append("")
    return lines
