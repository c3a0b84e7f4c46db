"""Accuracy (no timing) of int8 variants of all-mpnet-base-v2 on STS-B validation: the measurement behind
MPNet's family defaults in quantkit/families.py.

    .venv/bin/python bench/mpnet_accuracy.py [--max-length 128] [--only NAME ...]

One FP32 export (quantkit's), then ONNX Runtime dynamic int8 variants of it: the graph fused by ONNX Runtime's
transformer optimizer (``export.optimize: auto``) or not, attention score MatMuls (activation x activation)
quantized or kept FP32 (``weights_only_matmul``), embedding tables int8 or not (``Gather``). Each is scored by
Spearman of the pair cosine vs the gold score and by mean cosine to the FP32 embedding; the hardware defaults
of this CPU are applied (printed first).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from fetch_models import fetch  # noqa: E402

from quantkit.backends import get_backend  # noqa: E402
from quantkit.data import load_text_dataset  # noqa: E402
from quantkit.evaluation import OnnxRunner  # noqa: E402
from quantkit.export import export_onnx  # noqa: E402
from quantkit.fusion import optimize_graph  # noqa: E402
from quantkit.hardware import cpu_info, hardware_profile, resolve_quantization  # noqa: E402
from quantkit.metrics import cosine_rows  # noqa: E402
from quantkit.models import load_model  # noqa: E402
from quantkit.spec import DatasetSpec, ExportSpec, QuantizationConfig  # noqa: E402
from quantkit.tasks import task_for  # noqa: E402

STSB = REPO.parent / "shared" / "data" / "stsb" / "validation.jsonl"
VARIANTS = {  # name → (graph, quantization fields)
    "fused, MatMul (quantkit default)": ("transformer", {"op_types": ["MatMul"]}),
    "fused, MatMul + Gather": ("transformer", {"op_types": ["MatMul", "Gather"]}),
    "fused, weight MatMuls only": ("transformer", {"op_types": ["MatMul"], "weights_only_matmul": True}),
    "fused, weight MatMuls only + Gather": ("transformer", {"op_types": ["MatMul", "Gather"],
                                                           "weights_only_matmul": True}),
    "unfused, MatMul": ("none", {"op_types": ["MatMul"]}),
    "unfused, weight MatMuls only": ("none", {"op_types": ["MatMul"], "weights_only_matmul": True}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    profile = hardware_profile("auto")
    print(f"CPU: {cpu_info().model} (target {profile.target})")
    loaded = load_model(str(fetch("all-mpnet-base-v2", REPO / ".models")), task="feature-extraction")
    task = task_for("feature-extraction", loaded.config, None, Path(loaded.name_or_path))
    spec = DatasetSpec(path=str(STSB), text_columns=["sentence1", "sentence2"], label_column="score")
    data = load_text_dataset(spec, loaded.tokenizer, task, key="data.evaluation", max_length=args.max_length,
                             padding="longest")
    with tempfile.TemporaryDirectory(prefix="mpnet-accuracy-") as tmp:
        work = Path(tmp)
        fp32 = export_onnx(loaded, work / "fp32", ExportSpec())
        graphs = {"none": fp32}
        ref = OnnxRunner(fp32.path).run(data, 64, task).values
        base = task.compute("spearman", ref, data)
        print(f"| variant | Spearman | Δ vs FP32 | cosine to FP32 |\n|---|---|---|---|\n| FP32 | {base:.4f} | — | 1 |")
        for name, (graph, fields) in VARIANTS.items():
            if args.only and name not in args.only:
                continue
            if graph not in graphs:
                graphs[graph], _ = optimize_graph(fp32, graph, work / graph, model_type=loaded.model_type,
                                                  model_config=loaded.config, atol=1e-3, fuse_embeddings=False)
            config, _ = resolve_quantization(QuantizationConfig(approach="dynamic", **fields), profile)
            out = work / name.replace(" ", "_").replace(",", "") / "model.onnx"
            q = get_backend("onnxruntime").quantize(graphs[graph], config, out, workdir=out.parent, loaded=loaded)
            emb = OnnxRunner(q.path).run(data, 64, task).values
            rho = task.compute("spearman", emb, data)
            cos = float(cosine_rows(ref, emb).mean())
            print(f"| {name} | {rho:.4f} | {100 * (rho - base) / base:+.2f}% | {cos:.4f} |", flush=True)


if __name__ == "__main__":
    main()
