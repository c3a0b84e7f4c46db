"""Hardware-aware int8 on the reference model, side by side in one run (issue #5), and the int8 GEMM limit.

    .venv-optimum/bin/python bench/hardware_table.py [--rounds 3] [--repeats 30] [--threads N] [--profile]
        [--include NAME=DIR ...]
    .venv/bin/python bench/hardware_table.py --gemm [--rounds 7] [--threads N]

``--gemm`` (issue #13) times, at the GEMM shapes of the reference model (MiniLM, 384 hidden) and of a
base-size encoder (768 hidden), M = 8 x 128 rows, an FP32 ``MatMul`` against the ``MatMulInteger`` (u8 x s8)
ONNX Runtime runs after dynamic quantization, interleaved in the same rounds, and prints the achieved
GFLOP/s, the per-round int8/FP32 speed-up (median [min-max]) and the instruction-level limit of this CPU's
best int8 ISA against its FP32 FMA (multiply-accumulates per cycle per core): AVX2 or AVX-512 without VNNI
2x (vpmaddubsw + vpmaddwd), AVX-VNNI / AVX512-VNNI 4x (vpdpbusd), AMX-INT8 32x (tdpbusd, 1024 MACs/cycle vs
32 FP32 FMAs). A GEMM ratio above 4x means ONNX Runtime runs AMX tiles.

Rows: FP32 ONNX (unfused), FP32 fused (ONNX Runtime transformer optimizer), Optimum's
avx512_vnni dynamic and static presets, quantkit with ``hardware: auto`` (this CPU's
defaults, fused graph), quantkit with the VNNI target's defaults (U8S8) for contrast,
any ``--include``d artifact folder (e.g. a tuned model), and PyTorch FP32 / bf16 autocast
as reference points. Every ONNX model is scored on validation.jsonl (591, max_length 128)
and timed by the same subprocess probe at batch 1 and 8, sequence 128, in interleaved
rounds (best p50 kept). PyTorch is timed in this process with the same thread count.
``--profile`` adds ONNX Runtime's per-operator time for FP32 and quantkit's int8 model.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from quantkit import Quantizer, load_spec, with_overrides  # noqa: E402
from quantkit.data import load_rows, load_text_dataset  # noqa: E402
from quantkit.evaluation import OnnxRunner, compute_metric, to_predictions  # noqa: E402
from quantkit.export import export_onnx  # noqa: E402
from quantkit.fusion import optimize_graph  # noqa: E402
from quantkit.graph import model_size_bytes  # noqa: E402
from quantkit.hardware import cpu_info, detect_target  # noqa: E402
from quantkit.latency import default_threads, measure_side_by_side, ratio_estimate  # noqa: E402
from quantkit.spec import ExportSpec, LatencySpec  # noqa: E402
from quantkit.tasks import task_for  # noqa: E402

MODEL = REPO.parent / "shared" / "models" / "minilm-spam"
RECIPE = REPO / "recipes" / "minilm-spam-dynamic.yaml"
TRAIN = REPO.parent / "shared" / "data" / "spamassassin" / "train.jsonl"


def optimum_dynamic(fp32_dir: Path, out: Path) -> Path:
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    quantizer = ORTQuantizer.from_pretrained(fp32_dir, file_name="model.onnx")
    qconfig = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False)
    quantizer.quantize(save_dir=out, quantization_config=qconfig)
    return out / "model_quantized.onnx"


def optimum_static(fp32_dir: Path, out: Path, tokenizer, samples: int = 128) -> Path:
    """Optimum's avx512_vnni static preset (QDQ, per-tensor) calibrated with minmax on train rows."""
    from datasets import load_dataset
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoCalibrationConfig, AutoQuantizationConfig

    quantizer = ORTQuantizer.from_pretrained(fp32_dir, file_name="model.onnx")
    qconfig = AutoQuantizationConfig.avx512_vnni(is_static=True, per_channel=False)
    rows = load_dataset("json", data_files=str(TRAIN), split="train").select(range(samples))
    calib = rows.map(lambda b: tokenizer(b["text"], truncation=True, max_length=128, padding="max_length"),
                     batched=True, remove_columns=rows.column_names)
    ranges = quantizer.fit(dataset=calib, calibration_config=AutoCalibrationConfig.minmax(calib),
                           operators_to_quantize=qconfig.operators_to_quantize, batch_size=8)
    quantizer.quantize(save_dir=out, quantization_config=qconfig, calibration_tensors_range=ranges)
    return out / "model_quantized.onnx"


def torch_rows(loaded, data, threads: int, rounds: int, repeats: int) -> dict[str, dict]:
    """Accuracy and p50 of PyTorch FP32 and bf16 autocast at b1/b8 × 128."""
    import torch

    torch.set_num_threads(threads)
    model = loaded.model.eval()
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in data.inputs]
    out: dict[str, dict] = {}
    for label, bf16 in (("PyTorch FP32", False), ("PyTorch bf16 autocast", True)):
        def run(feeds):
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                return model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.float().numpy()

        logits = np.concatenate([run(b) for b in data.batches(32, names)])
        acc = compute_metric("accuracy", to_predictions(logits, False), data.labels)
        p50 = {}
        for batch in (1, 8):
            feeds = data.batch(0, batch, names)
            for _ in range(3):
                run(feeds)
            best = float("inf")
            for _ in range(rounds):
                times = []
                for _ in range(repeats):
                    t = time.perf_counter()
                    run(feeds)
                    times.append((time.perf_counter() - t) * 1000)
                best = min(best, float(np.percentile(times, 50)))
            p50[batch] = best
        out[label] = {"accuracy": acc, "p50": p50, "size_mb": loaded.num_parameters * (2 if bf16 else 4) / 2**20}
    return out


#: int8 : FP32 multiply-accumulates per cycle per core, by the best int8 instruction set (see the module doc).
GEMM_LIMIT = {"amx": 32.0, "avx512_vnni": 4.0, "avx_vnni": 4.0, "avx512": 2.0, "avx2": 2.0}
#: (rows, K, N): QKV, attention output, FFN in, FFN out at batch 8 x 128, for 384 and 768 hidden.
GEMM_SHAPES = [(1024, 384, 1152), (1024, 384, 384), (1024, 384, 1536), (1024, 1536, 384),
               (1024, 768, 2304), (1024, 768, 768), (1024, 768, 3072), (1024, 3072, 768)]


def gemm_table(console: Console, threads: int, rounds: int, repeats: int = 30) -> list[dict]:
    """FP32 MatMul vs int8 MatMulInteger at the encoder GEMM shapes, interleaved rounds, vs the ISA limit."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    cpu = cpu_info()
    target = detect_target(cpu)
    isa = ("amx" if {"amx_int8", "amx_tile"} <= set(cpu.features) else "avx512_vnni" if "avx512_vnni" in cpu.features
           else "avx_vnni" if "avx_vnni" in cpu.features else "avx512" if "avx512bw" in cpu.features else "avx2")
    limit = GEMM_LIMIT[isa]
    rng = np.random.default_rng(0)

    def session(int8: bool, k: int, n: int):
        if int8:
            w = numpy_helper.from_array(rng.integers(-127, 128, (k, n)).astype(np.int8), "w")
            zw = numpy_helper.from_array(np.array(0, np.int8), "zw")
            node = helper.make_node("MatMulInteger", ["x", "w", "zx", "zw"], ["y"])
            inputs = [helper.make_tensor_value_info("x", TensorProto.UINT8, ["m", k]),
                      helper.make_tensor_value_info("zx", TensorProto.UINT8, [])]
            out = helper.make_tensor_value_info("y", TensorProto.INT32, ["m", n])
            inits = [w, zw]
        else:
            inits = [numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "w")]
            node = helper.make_node("MatMul", ["x", "w"], ["y"])
            inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", k])]
            out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", n])
        model = helper.make_model(helper.make_graph([node], "gemm", inputs, [out], inits),
                                  opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
        onnx.checker.check_model(model)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])

    def p50(sess, feeds) -> float:
        for _ in range(3):
            sess.run(None, feeds)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            sess.run(None, feeds)
            times.append(time.perf_counter() - t)
        return float(np.median(times))

    rows = []
    for m, k, n in GEMM_SHAPES:
        f32, i8 = session(False, k, n), session(True, k, n)
        xf = {"x": rng.standard_normal((m, k)).astype(np.float32)}
        xi = {"x": rng.integers(0, 256, (m, k)).astype(np.uint8), "zx": np.array(128, np.uint8)}
        ratios, tf, ti = [], [], []
        for _ in range(rounds):
            tf.append(p50(f32, xf))
            ti.append(p50(i8, xi))
            ratios.append(tf[-1] / ti[-1])
        est = ratio_estimate(ratios)
        flops = 2 * m * k * n
        rows.append({"shape": [m, k, n], "fp32_gflops": flops / float(np.median(tf)) / 1e9,
                     "int8_gops": flops / float(np.median(ti)) / 1e9, "speedup": est.median,
                     "speedup_min": min(ratios), "speedup_max": max(ratios), "limit": limit})
    table = Table(title=f"int8 GEMM vs FP32 GEMM, ONNX Runtime {ort.__version__}, {cpu.model} (target {target}, "
                        f"int8 ISA {isa}), {threads} thread(s), median (min-max) of {rounds} interleaved rounds")
    for col in ("M x K x N", "FP32 GFLOP/s", "int8 GOP/s", "int8 / FP32", f"ISA limit ({isa})", "of limit"):
        table.add_column(col, justify="left" if col == "M x K x N" else "right")
    for r in rows:
        table.add_row(" x ".join(map(str, r["shape"])), f"{r['fp32_gflops']:.0f}", f"{r['int8_gops']:.0f}",
                      f"{r['speedup']:.2f}x ({r['speedup_min']:.2f}-{r['speedup_max']:.2f})", f"{limit:.0f}x",
                      f"{r['speedup'] / limit:.0%}")
    console.print(table)
    return rows


def profile(path: Path, threads: int, vocab: int, runs: int = 10) -> list[tuple[str, float, int]]:
    """(op type, ms per run, nodes) from ONNX Runtime's profiler at b8 × 128."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.enable_profiling = True
    so.profile_file_prefix = str(path.parent / "profile")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for i in sess.get_inputs():
        feeds[i.name] = (rng.integers(1000, vocab, (8, 128)) if i.name == "input_ids"
                         else np.zeros((8, 128)) if i.name == "token_type_ids" else np.ones((8, 128))).astype(np.int64)
    for _ in range(3):
        sess.run(None, feeds)
    prof_file = sess.end_profiling()
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        sess.run(None, feeds)
    prof_file2 = sess.end_profiling()
    events = json.loads(Path(prof_file2).read_text())
    for f in (prof_file, prof_file2):
        os.remove(f)
    total: collections.Counter[str] = collections.Counter()
    count: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            total[e["args"]["op_name"]] += e["dur"]
            count[e["args"]["op_name"]] += 1
    return [(op, us / runs / 1000, count[op] // runs) for op, us in total.most_common(10)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "out" / "bench-hardware")
    parser.add_argument("--profile", action="store_true", help="per-operator time of FP32 and quantkit int8")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference rows")
    parser.add_argument("--gemm", action="store_true",
                        help="only the int8 vs FP32 GEMM table against this CPU's instruction-level limit")
    parser.add_argument("--include", action="append", default=[], metavar="NAME=DIR",
                        help="also compare an existing artifact folder (e.g. a tuned model)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    console = Console(width=170)
    threads = args.threads or default_threads()
    if args.gemm:
        gemm_table(console, threads, max(args.rounds, 7))
        return
    work = args.out
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cpu = cpu_info()
    console.print(f"CPU: {cpu.model}, {cpu.physical_cores} cores, features {' '.join(cpu.features)}, "
                  f"target {detect_target(cpu)}; {threads} threads")

    quantizer = Quantizer.from_pretrained(MODEL)
    loaded = quantizer.loaded
    fp32 = export_onnx(loaded, work / "fp32", ExportSpec())
    loaded.config.save_pretrained(work / "fp32")
    loaded.tokenizer.save_pretrained(work / "fp32")
    fused, _ = optimize_graph(fp32, "transformer", work / "fp32-fused", model_type=loaded.model_type,
                              model_config=loaded.config, atol=1e-3)
    models: dict[str, Path] = {"FP32 ONNX": fp32.path, "FP32 fused": fused.path}
    models["Optimum avx512_vnni dynamic"] = optimum_dynamic(work / "fp32", work / "optimum-dynamic")
    models["Optimum avx512_vnni static"] = optimum_static(work / "fp32", work / "optimum-static", loaded.tokenizer)
    spec = with_overrides(load_spec(RECIPE), **{"evaluation.shapes": None, "output.keep_fp32": False})
    variants = {"quantkit hardware: auto": spec,
                "quantkit hardware: avx512_vnni (U8S8)": with_overrides(spec, hardware="avx512_vnni")}
    chosen = {}
    for name, vspec in variants.items():
        result = quantizer.quantize(vspec, output_dir=work / name.split(":")[-1].strip().split(" ")[0],
                                    overwrite=True, progress=False)
        models[name] = result.model_path
        chosen[name] = {k: result.report["quantization"]["config"][k]
                        for k in ("weight_type", "activation_type", "reduce_range", "per_channel")}
        console.print(f"{name}: {chosen[name]}, {result.report['timings']['total_s']:.0f}s")
    for item in args.include:
        name, _, folder = item.partition("=")
        models[name] = Path(folder).resolve() / "model.onnx"

    data = load_text_dataset(spec.data.evaluation, loaded.tokenizer, task_for("text-classification", loaded.config),
                             key="data.evaluation", max_length=128, padding="max_length")
    accuracy = {name: compute_metric("accuracy", to_predictions(OnnxRunner(p, threads).predict(data, 32), False),
                                     data.labels) for name, p in models.items()}
    p50: dict[tuple[str, int], float] = {}
    for batch in (1, 8):
        lat = LatencySpec(batch_size=batch, sequence_length=128, warmup=5, repeats=args.repeats,
                          rounds=args.rounds, threads=threads)
        for name, st in measure_side_by_side(models, lat, vocab_size=loaded.config.vocab_size).items():
            p50[(name, batch)] = st.p50_ms
    sizes = {name: model_size_bytes(p) / 2**20 for name, p in models.items()}
    if not args.no_torch:
        for name, row in torch_rows(loaded, data, threads, args.rounds, max(10, args.repeats // 3)).items():
            accuracy[name], sizes[name] = row["accuracy"], row["size_mb"]
            p50[(name, 1)], p50[(name, 8)] = row["p50"][1], row["p50"][8]

    base, preset = "FP32 ONNX", "Optimum avx512_vnni dynamic"
    table = Table(title=f"minilm-spam, validation.jsonl (591), seq 128, {threads} threads, {cpu.model} "
                        f"({detect_target(cpu)}); best p50 of {args.rounds} interleaved rounds x {args.repeats}")
    for col in ("model", "accuracy", "Δ vs FP32", "size MB", "p50 b1 ms", "p50 b8 ms", "b8 vs FP32",
                "b8 speed-up", "b8 vs Optimum dyn"):
        table.add_column(col, justify="left" if col == "model" else "right")
    rows = []
    names = list(dict.fromkeys([*models, *(k for k, _ in p50)]))
    for name in names:
        drop = (accuracy[base] - accuracy[name]) / accuracy[base]
        row = {"model": name, "accuracy": accuracy[name], "relative_drop": drop, "size_mb": sizes[name],
               "p50_b1_ms": p50[(name, 1)], "p50_b8_ms": p50[(name, 8)],
               "b8_vs_fp32": p50[(name, 8)] / p50[(base, 8)], "b8_vs_optimum": p50[(name, 8)] / p50[(preset, 8)],
               "config": chosen.get(name)}
        rows.append(row)
        table.add_row(name, f"{row['accuracy']:.4f}", f"{-drop:+.2%}", f"{row['size_mb']:.1f}",
                      f"{row['p50_b1_ms']:.1f}", f"{row['p50_b8_ms']:.1f}", f"{row['b8_vs_fp32']:.2f}",
                      f"{1 / row['b8_vs_fp32']:.2f}x", f"{row['b8_vs_optimum']:.2f}")
    console.print(table)
    result = {"cpu": cpu.to_dict(), "threads": threads, "rows": rows}
    if args.profile:
        result["profile"] = {}
        for name in (base, "quantkit hardware: auto"):
            ops = profile(models[name], threads, loaded.config.vocab_size)
            result["profile"][name] = ops
            prof = Table(title=f"ONNX Runtime profile, {name}, b8 x 128 (ms per run)")
            for col in ("op", "ms", "share", "nodes"):
                prof.add_column(col, justify="left" if col == "op" else "right")
            total = sum(ms for _, ms, _ in ops)
            for op, ms, n in ops:
                prof.add_row(op, f"{ms:.1f}", f"{ms / total:.0%}", str(n))
            console.print(prof)
    (work / "hardware_table.json").write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"json: {work / 'hardware_table.json'}")


if __name__ == "__main__":
    main()
