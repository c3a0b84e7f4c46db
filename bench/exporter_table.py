"""quantkit's exporter vs optimum-onnx's, side by side in one run, on the reference model.

    .venv-optimum/bin/python bench/exporter_table.py [--rounds 7] [--repeats 30] [--threads N] [--out out/bench-exporters]

Runs on the quantkit[optimum] stack (both exporters available: bash scripts/setup.sh --stack optimum). The
reference model (../shared/models/minilm-spam) goes through recipes/minilm-spam-dynamic.yaml twice, once per
exporter (``export.exporter: quantkit`` / ``optimum``; everything else as the recipe says: fused graph,
dynamic int8 with the hardware defaults), each scored on the same 591 validation emails. Then the two int8
models are timed at batch 8 × sequence 128 with quantkit.latency.measure: interleaved rounds (order rotated
each round), each round of each model in a fresh process (SubprocessTimer), the same random inputs; what is
reported is the median of the per-round ratios quantkit / optimum with its order-statistic interval
(ratio_estimate), and every round's ratio, so noise on a shared machine shows as what it is.

Prints the table and writes ``exporter_table.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

MODEL = REPO.parent / "shared" / "models" / "minilm-spam"
RECIPE = REPO / "recipes" / "minilm-spam-dynamic.yaml"
EXPORTERS = ("quantkit", "optimum")


def quantize(exporter: str, out: Path, console: Console, limit: int | None):
    """The recipe with ``export.exporter`` set; latency here is the run's own (1 round): the table times later."""
    from quantkit import Quantizer, load_spec, with_overrides

    changes = {"model.name_or_path": str(MODEL), "export.exporter": exporter, "evaluation.shapes": None,
               "evaluation.latency.rounds": 1, "evaluation.latency.max_rounds": 1, "evaluation.latency.repeats": 3,
               "output.keep_fp32": False}
    if limit:
        changes["data.evaluation.limit"] = limit
    spec = with_overrides(load_spec(RECIPE), **changes)
    start = time.perf_counter()
    result = Quantizer.from_pretrained(MODEL).quantize(spec, output_dir=out, overwrite=True, progress=False)
    console.print(f"{exporter}: exported, quantized and evaluated in {time.perf_counter() - start:.0f}s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (at least 7)")
    parser.add_argument("--repeats", type=int, default=30, help="timed runs per round")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: physical cores)")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "bench-exporters")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N validation rows (smoke runs)")
    args = parser.parse_args()
    if args.rounds < 7:
        parser.error("--rounds must be at least 7 (interleaved rounds make the ratio's interval)")
    logging.basicConfig(level=logging.WARNING)
    console = Console(width=160)

    from quantkit.export import optimum_onnx_available
    from quantkit.graph import op_counts
    from quantkit.spec import LatencySpec
    from quantkit.latency import SubprocessTimer, measure, ratio_estimate

    if not optimum_onnx_available():
        sys.exit("bench/exporter_table.py needs both exporters: run it on the quantkit[optimum] stack "
                 "(bash scripts/setup.sh --stack optimum; .venv-optimum/bin/python bench/exporter_table.py)")
    work = args.out
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    results = {name: quantize(name, work / name, console, args.limit) for name in EXPORTERS}
    for name, result in results.items():
        assert result.report["export"]["exporter"] == name, result.report["export"]

    latency = LatencySpec(batch_size=8, sequence_length=128, warmup=5, repeats=args.repeats, threads=args.threads)
    from transformers import AutoConfig

    vocab = int(AutoConfig.from_pretrained(MODEL).vocab_size)
    timer = SubprocessTimer(latency, sequence_length=128, vocab_size=vocab)
    paths = {name: results[name].model_path for name in EXPORTERS}
    console.print(f"timing {', '.join(EXPORTERS)} int8 at b8×128: {args.rounds} interleaved rounds of {args.repeats} "
                  "runs, a fresh process per model per round")
    rounds = measure(paths, timer, min_rounds=args.rounds, max_rounds=args.rounds)
    per_round = [q / o for q, o in zip(rounds.times["quantkit"], rounds.times["optimum"])]
    estimate = ratio_estimate(per_round)

    rows = []
    for name, result in results.items():
        report = result.report
        ops = op_counts(result.model_path)
        fp32, int8 = report["fp32"]["value"], report["quantized"]["value"]
        rows.append({
            "exporter": name,
            "fp32_accuracy": fp32,
            "int8_accuracy": int8,
            "delta_vs_fp32": (int8 - fp32) / fp32 if fp32 else None,
            "export_max_abs_diff": report["export"]["max_abs_diff"],
            "fused": report["quantization"].get("optimization", {}).get("fused", {}),
            "QAttention": ops.get("QAttention", 0),
            "MatMulInteger": ops.get("MatMulInteger", 0),
            "int8_p50_b8_ms": rounds.median_ms(name),
            "p50_per_round_ms": rounds.times[name],
            "size_mb": report["quantized"].get("size_mb"),
        })

    table = Table(title="reference model, recipes/minilm-spam-dynamic.yaml: quantkit's exporter vs optimum-onnx's")
    for col in ("exporter", "accuracy FP32", "accuracy int8", "Δ vs FP32", "QAttention", "MatMulInteger",
                "int8 p50 b8×128 ms", "vs optimum"):
        table.add_column(col, justify="left" if col == "exporter" else "right")
    for row in rows:
        versus = estimate.describe() if row["exporter"] == "quantkit" else "1.00x"
        table.add_row(row["exporter"], f"{row['fp32_accuracy']:.4f}", f"{row['int8_accuracy']:.4f}",
                      f"{100 * row['delta_vs_fp32']:+.2f}%", str(row["QAttention"]), str(row["MatMulInteger"]),
                      f"{row['int8_p50_b8_ms']:.1f}", versus)
    console.print(table)
    console.print("per-round ratio quantkit / optimum: " + ", ".join(f"{r:.3f}" for r in per_round))
    verdict = ("within 5%" if 0.95 <= estimate.low and estimate.high <= 1.05 else
               "not shown within 5% (the interval reaches past ±5%)")
    console.print(f"int8 latency, quantkit exporter vs optimum exporter: {estimate.describe()}: {verdict}")
    summary = {"model": str(MODEL), "recipe": str(RECIPE.relative_to(REPO)), "rows": rows,
               "ratio_quantkit_over_optimum": {**estimate.to_dict(), "per_round": per_round},
               "latency": latency.model_dump(mode="json"),
               "packages": results["quantkit"].report.get("environment", {}).get("packages", {}),
               "cpu": results["quantkit"].report.get("environment", {}).get("cpu", {})}
    (work / "exporter_table.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    console.print(f"written: {work / 'exporter_table.json'}")


if __name__ == "__main__":
    main()
