"""What a search tells the user: the trial table (for the report and the CLI) and ``tuning.png``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .store import Trial
from .strategies import SearchOutcome
from .tolerance import Tolerance

__all__ = ["trial_rows", "describe_config", "tuning_summary", "plot_tuning"]

#: Config fields shown in the one-line description of a trial.
_SHOWN = ("optimize", "approach", "format", "weight_type", "activation_type", "per_channel", "reduce_range", "op_types",
          "weights_only_matmul")


def describe_config(config: dict[str, Any], base: dict[str, Any] | None = None) -> str:
    """Short text of a config: its approach and what differs from ``base`` (default: the spec defaults)."""
    if base is None:
        from ..spec import QuantizationConfig

        base = QuantizationConfig().model_dump(mode="json")
    parts = []
    for key in _SHOWN:
        value = config.get(key)
        if key == "optimize" and value == base.get(key, "auto"):
            continue
        if value is None or (base.get(key) == value and key != "approach"):
            continue
        parts.append(f"{key}={'+'.join(value) if isinstance(value, list) else value}")
    if config.get("approach") == "static":
        cal = config.get("calibration", {})
        parts.append(f"calibration={cal.get('method')}")
    if config.get("approach") == "weight_only":
        w = config.get("weight_only") or {}
        parts.append(f"int{w.get('bits', 4)} {w.get('algorithm', 'rtn')} block={w.get('block_size', 32)}")
    excluded = config.get("nodes_to_exclude") or []
    if excluded:
        parts.append(f"fp32_nodes={len(excluded)}")
    return " ".join(parts)


def trial_rows(trials: list[Trial], base: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return [
        {
            "trial": t.idx,
            "origin": t.origin,
            "config": describe_config(t.config, base),
            "status": t.status,
            "metric": t.metric,
            "loss": t.loss,
            "passed": t.passed,
            "latency_ms": t.latency_ms,
            "size_mb": round(t.size_bytes / 2**20, 3) if t.size_bytes else None,
            "duration_s": round(t.duration_s, 2),
            "note": t.note,
            "error": t.error,
            "config_hash": t.config_hash,
            "hardware": t.hardware,
        }
        for t in trials
    ]


def tuning_summary(
    outcome: SearchOutcome, tolerance: Tolerance, strategy: str, objective: str, base: dict[str, Any]
) -> dict[str, Any]:
    chosen = outcome.chosen or outcome.closest
    return {
        "strategy": strategy,
        "objective": objective,
        "tolerance": {"type": tolerance.kind, "value": tolerance.value, "higher_is_better": tolerance.higher_is_better},
        "baseline": {"metric": outcome.baseline.metric, "latency_ms": outcome.baseline.latency_ms,
                     "size_bytes": outcome.baseline.size_bytes},
        "required_metric": tolerance.required(outcome.baseline.metric),
        "target": tolerance.describe(outcome.baseline.metric),
        "within_tolerance": outcome.chosen is not None,
        "chosen_trial": chosen.idx if chosen else None,
        "chosen_config": chosen.config if chosen else None,
        "reason": outcome.reason if outcome.chosen else (
            f"closest candidate (trial {chosen.idx}) misses the target by {chosen.loss - tolerance.value:.4g}"
            if chosen is not None and chosen.loss is not None else outcome.reason
        ),
        "fallback_nodes": outcome.fallback_nodes if outcome.chosen is not None else [],
        "trials": trial_rows(outcome.trials, base),
        "counts": {
            status: sum(1 for t in outcome.trials if t.status == status) for status in ("ok", "pruned", "failed")
        },
    }


def plot_tuning(summary: dict[str, Any], metric_name: str, path: str | Path) -> Path:
    """Metric vs latency of every trial, the tolerance line, FP32 and the chosen point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    rows = [r for r in summary["trials"] if r["latency_ms"] is not None]
    styles = {
        (True, "ok"): ("tab:green", "o", "within tolerance"),
        (False, "ok"): ("tab:red", "o", "outside tolerance"),
        (False, "pruned"): ("tab:gray", "x", "pruned (cannot win)"),
    }
    for (passed, status), (color, marker, label) in styles.items():
        pts = [r for r in rows if r["passed"] == passed and r["status"] == status and (r["metric"] is not None or status == "pruned")]
        if not pts:
            continue
        ys = [r["metric"] if r["metric"] is not None else summary["required_metric"] for r in pts]
        ax.scatter([r["latency_ms"] for r in pts], ys, c=color, marker=marker, label=label, s=40, zorder=3)
        for r, y in zip(pts, ys):
            ax.annotate(str(r["trial"]), (r["latency_ms"], y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    base = summary["baseline"]
    if base["latency_ms"] is not None:
        ax.scatter([base["latency_ms"]], [base["metric"]], c="tab:blue", marker="s", s=70, label="FP32", zorder=4)
    ax.axhline(summary["required_metric"], color="tab:orange", linestyle="--",
               label=f"tolerance ({summary['target'].split(' (')[0]})")
    chosen = next((r for r in rows if r["trial"] == summary["chosen_trial"]), None)
    if chosen is not None and chosen["metric"] is not None:
        ax.scatter([chosen["latency_ms"]], [chosen["metric"]], s=260, facecolors="none",
                   edgecolors="black", linewidths=2, label="chosen" if summary["within_tolerance"] else "closest",
                   zorder=5)
    ax.set_xlabel("p50 latency (ms)")
    ax.set_ylabel(metric_name)
    ax.set_title(f"quantkit tuning: {summary['strategy']} strategy, objective {summary['objective']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
