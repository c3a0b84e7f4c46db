"""FP32 vs Optimum's avx512_vnni dynamic preset vs quantkit, side by side in one run.

    .venv-optimum/bin/python bench/reference_table.py [--rounds 3] [--threads N] [--out out/bench]

Every model is scored on the same data (validation.jsonl, max_length 128) and timed at
the same shapes (batch 1 and 8, sequence 128) by the same subprocess probe; the timing
rounds are interleaved (A B C A B C ...) and the best p50 of the rounds is kept, so
machine drift hits every model alike.
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

from quantkit import Quantizer, load_spec  # noqa: E402
from quantkit.data import load_text_dataset  # noqa: E402
from quantkit.evaluation import OnnxRunner, compute_metric, measure_side_by_side, to_predictions  # noqa: E402
from quantkit.export import export_onnx  # noqa: E402
from quantkit.graph import model_size_bytes  # noqa: E402
from quantkit.spec import ExportSpec, LatencySpec  # noqa: E402

MODEL = REPO.parent / "shared" / "models" / "minilm-spam"
RECIPES = {
    "quantkit dynamic": REPO / "recipes" / "minilm-spam-dynamic.yaml",
    "quantkit static": REPO / "recipes" / "minilm-spam-static.yaml",
    "quantkit tuned (1% tol.)": REPO / "recipes" / "minilm-spam-tune.yaml",
}


def optimum_preset(fp32_dir: Path, out: Path) -> Path:
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    quantizer = ORTQuantizer.from_pretrained(fp32_dir, file_name="model.onnx")
    qconfig = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False)
    quantizer.quantize(save_dir=out, quantization_config=qconfig)
    return out / "model_quantized.onnx"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "out" / "bench")
    parser.add_argument("--include", action="append", default=[], metavar="NAME=DIR",
                        help="also compare an existing artifact folder (e.g. a QAT run)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    console = Console(width=160)
    work = args.out
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    quantizer = Quantizer.from_pretrained(MODEL)
    loaded = quantizer.loaded
    fp32 = export_onnx(loaded, work / "fp32", ExportSpec())
    loaded.config.save_pretrained(work / "fp32")
    models: dict[str, Path] = {"FP32": fp32.path}
    start = time.perf_counter()
    models["Optimum avx512_vnni dynamic"] = optimum_preset(work / "fp32", work / "optimum")
    console.print(f"optimum preset quantized in {time.perf_counter() - start:.1f}s")
    for name, recipe in RECIPES.items():
        out_dir = work / name.split(" (")[0].replace(" ", "-")
        result = quantizer.quantize(recipe, output_dir=out_dir, overwrite=True, progress=False)
        models[name] = result.model_path
        console.print(f"{name}: quantized and evaluated in {result.report['timings']['total_s']:.0f}s")

    for item in args.include:
        name, _, folder = item.partition("=")
        models[name] = Path(folder).resolve() / "model.onnx"

    spec = load_spec(RECIPES["quantkit dynamic"])
    data = load_text_dataset(spec.data.evaluation, loaded.tokenizer, key="data.evaluation",
                             max_length=128, padding="max_length", model_config=loaded.config)
    accuracy = {}
    for name, path in models.items():
        logits = OnnxRunner(path, args.threads).predict(data, 32)
        accuracy[name] = compute_metric("accuracy", to_predictions(logits, False), data.labels)

    p50: dict[tuple[str, int], float] = {}
    for batch in (1, 8):
        lat = LatencySpec(batch_size=batch, sequence_length=128, warmup=5, repeats=args.repeats,
                          rounds=args.rounds, threads=args.threads)
        stats = measure_side_by_side(models, lat, vocab_size=loaded.config.vocab_size)
        for name, st in stats.items():
            p50[(name, batch)] = st.p50_ms
            threads = st.threads

    base, preset = "FP32", "Optimum avx512_vnni dynamic"
    table = Table(title=f"minilm-spam, validation.jsonl (591), seq 128, {threads} threads, "
                        f"best p50 of {args.rounds} interleaved rounds x {args.repeats} runs")
    for col in ("model", "accuracy", "Δ vs FP32", "size MB", "p50 b1 ms", "p50 b8 ms",
                "b8 vs FP32", "b8 vs Optimum"):
        table.add_column(col, justify="left" if col == "model" else "right")
    rows = []
    for name, path in models.items():
        drop = (accuracy[base] - accuracy[name]) / accuracy[base]
        row = {
            "model": name,
            "accuracy": accuracy[name],
            "relative_drop": drop,
            "size_mb": model_size_bytes(path) / 2**20,
            "p50_b1_ms": p50[(name, 1)],
            "p50_b8_ms": p50[(name, 8)],
            "b8_vs_fp32": p50[(name, 8)] / p50[(base, 8)],
            "b8_vs_optimum": p50[(name, 8)] / p50[(preset, 8)],
        }
        rows.append(row)
        table.add_row(name, f"{row['accuracy']:.4f}", f"{-drop:+.2%}", f"{row['size_mb']:.1f}",
                      f"{row['p50_b1_ms']:.2f}", f"{row['p50_b8_ms']:.2f}", f"{row['b8_vs_fp32']:.2f}x",
                      f"{row['b8_vs_optimum']:.2f}x")
    console.print(table)
    (work / "reference_table.json").write_text(json.dumps(rows, indent=2) + "\n")
    console.print(f"json: {work / 'reference_table.json'}")


if __name__ == "__main__":
    main()
