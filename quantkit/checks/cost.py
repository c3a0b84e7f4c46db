"""Stage 5: what the run will cost — disk, calibration memory, duration — and whether int8 pays off here.

Memory follows what quantkit's ONNX Runtime backend really does (:func:`quantkit.backends.onnxruntime.calibrate`):
calibration streams in chunks of up to ``_CHUNK_BATCHES`` batches; for entropy/percentile ONNX Runtime's
``HistogramCalibrater`` keeps every calibrated tensor of the chunk (the float inputs/outputs of the nodes
in ``op_types``) in memory, then copies each one twice or three times (stack, flatten, abs) while
histogramming. MinMax reduces each tensor inside the graph and keeps only one batch's activations.

Durations come from a tiny timed probe: one FP32 ``MatMul`` and its dynamic-int8 twin
(``DynamicQuantizeLinear`` + ``MatMulInteger``) at the model's hidden sizes in ONNX Runtime, plus the
tokenization probe of the data stage; FLOPs are counted from the config.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ..hardware import cpu_info, hardware_profile
from ..fusion import PROBED_LEVELS
from ..latency import MIN_DECISION_ROUNDS, default_threads
from ..probe import will_probe
from ..shapes import GRID_REPEATS
from ..backends import backend_class
from ..backends.onnxruntime import chunk_batches
from ..spec import QuantizationConfig
from .base import CheckContext, Memo, Problem, check, error, warning
from .dataset import get_rows, rows_used, tokenized_sample
from .files import nearest_existing
from .model import get_config, get_task_object, hidden_dims, model_size

logger = logging.getLogger(__name__)

__all__ = ["calibrated_floats_per_token", "calibration_memory", "forward_flops", "matmul_probe", "candidate_configs"]

GB = 2**30
MB = 2**20
#: Seconds to start a fresh latency-measurement process (``python -m quantkit.latency``).
PROCESS_START_S = 3.0
#: Loading the model and tokenizer, and the rest of a run's fixed costs (seconds).
LOAD_S = 5.0
#: Optimizing and quantizing one candidate of the hardware probe, besides its size-dependent part (seconds).
BUILD_S = 2.0
#: Parallel efficiency of ONNX Runtime's intra-op threads over the single-thread probe.
THREAD_EFFICIENCY = 0.85


def _human(n: float) -> str:
    return f"{n / GB:.1f} GB" if n >= GB else f"{n / MB:.0f} MB"


def _duration(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


# --------------------------------------------------------------------------- pure estimates
def calibrated_floats_per_token(dims: dict[str, int], seq: int, op_types: list[str]) -> int:
    """Float32 values per token in the tensors calibration collects (BERT-style encoder layers).

    Per layer, the float inputs/outputs of its MatMuls: the Q/K/V input and outputs, scaled Q and K,
    the scores and probabilities (heads × seq each), V, the context before and after its reshape, the
    attention output, the FFN input, intermediate and activation (intermediate each) and output:
    ``12·hidden + 2·heads·seq + 2·intermediate``. Gather adds the three embedding lookups and the
    pooler's input (``4·hidden``).
    """
    h, heads, inter, layers = dims["hidden"], dims["heads"], dims["intermediate"], dims["layers"]
    n = 0
    if "MatMul" in op_types:
        n += layers * (12 * h + 2 * heads * seq + 2 * inter)
    if "Gather" in op_types:
        n += 4 * h
    return n


def _largest_tensor(dims: dict[str, int], seq: int, op_types: list[str]) -> int:
    """Floats per example of the largest calibrated tensor."""
    sizes = [dims["hidden"] * seq]
    if "MatMul" in op_types:
        sizes += [dims["heads"] * seq * seq, dims["intermediate"] * seq]
    return max(sizes)


def calibration_memory(
    dims: dict[str, int],
    *,
    params: int,
    config: QuantizationConfig,
    seq: int,
    samples: int,
) -> dict[str, Any]:
    """Peak RAM (bytes) of calibrating ``config`` as quantkit runs it, with its parts."""

    cal = config.calibration
    per_token = calibrated_floats_per_token(dims, seq, config.op_types)
    per_example = per_token * seq * 4
    batch = min(cal.batch_size, samples)
    weights = params * 4
    one_batch = batch * per_example
    if backend_class(config.backend).needs_torch:  # PT2E calibrates in PyTorch, batch by batch
        parts = {"model copies": 2 * weights, "one batch of activations": one_batch}
        held = 0
    elif cal.method == "minmax":  # ranges reduced in-graph; ONNX Runtime's arena holds about 2 batches
        parts = {"model copies": 3 * weights, "one batch of activations (ORT arena)": 2 * one_batch}
        held = 0
    else:
        n_batches = -(-samples // cal.batch_size)
        chunk = min(samples, cal.batch_size * chunk_batches(n_batches))
        held = chunk * per_example
        copies = 3 if (cal.method == "percentile" and config.activation_symmetric) else 2
        tensors = dims["layers"] * 15 + 4
        parts = {
            f"{chunk} examples' calibrated tensors": held,
            "histogramming copies": copies * chunk * _largest_tensor(dims, seq, config.op_types) * 4,
            "histograms": tensors * cal.num_bins * 16,
            "model copies": 3 * weights,
            "one batch of activations": one_batch,
        }
    return {"peak": int(sum(parts.values())), "parts": parts, "per_example": per_example, "held": held}


def forward_flops(dims: dict[str, int], seq: int) -> float:
    """MatMul FLOPs of one example's forward pass (projections, FFN and attention)."""
    h, inter, layers = dims["hidden"], dims["intermediate"], dims["layers"]
    return 2.0 * seq * layers * (4 * h * h + 2 * h * inter) + 4.0 * layers * seq * seq * h


def candidate_configs(ctx: CheckContext, limit: int = 512) -> list[tuple[str, QuantizationConfig]]:
    """``(key path, config)`` for the base config and each valid point of the tuning space."""
    base = ctx.spec.quantization
    out = [("quantization", base)]
    tuning = ctx.spec.tuning
    if tuning is None or not tuning.space:
        return out
    keys = list(tuning.space)
    dumped = base.model_dump(mode="json")
    for values in itertools.islice(itertools.product(*(tuning.space[k] for k in keys)), limit):
        data = {**dumped, "calibration": dict(dumped["calibration"])}
        for k, v in zip(keys, values):
            if k.startswith("calibration."):
                data["calibration"][k.split(".", 1)[1]] = v
            elif k == "export.optimize":
                continue  # graph optimization does not change calibration cost
            else:
                data[k] = v
        if data.get("approach") == "dynamic":
            data.update(format=None, symmetric_activations=None, activation_type="uint8")
        try:
            out.append(("tuning.space", QuantizationConfig.model_validate(data)))
        except Exception:  # noqa: BLE001 - combinations that cannot exist are skipped by the search too
            continue
    return out


# --------------------------------------------------------------------------- probes
def matmul_probe(hidden: int, inter: int, rows: int = 512, budget_s: float = 0.4) -> dict[str, float]:
    """Time an FP32 MatMul and its dynamic-int8 twin in ONNX Runtime (one thread, interleaved, best of runs).

    Returns the GFLOP/s of each, their ratio (``speedup``) and numpy's histogram rate (values/s).
    """
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(0)
    w = rng.standard_normal((hidden, inter)).astype(np.float32)
    wq = np.clip(np.round(w / (np.abs(w).max() / 127)), -127, 127).astype(np.int8)
    x_info = h.make_tensor_value_info("x", T.FLOAT, ["m", hidden])
    y_info = h.make_tensor_value_info("y", T.FLOAT, ["m", inter])
    graphs = {
        "fp32": h.make_graph([h.make_node("MatMul", ["x", "w"], ["y"])], "fp32", [x_info], [y_info],
                             [nh.from_array(w, "w")]),
        "int8": h.make_graph([
            h.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
            h.make_node("MatMulInteger", ["xq", "wq", "xz", "wz"], ["yi"]),
            h.make_node("Cast", ["yi"], ["yf"], to=T.FLOAT),
            h.make_node("Mul", ["xs", "ws"], ["s"]),
            h.make_node("Mul", ["yf", "s"], ["y"]),
        ], "int8", [x_info], [y_info], [nh.from_array(wq, "wq"), nh.from_array(np.array(0, np.int8), "wz"),
                                        nh.from_array(np.array(0.01, np.float32), "ws")]),
    }
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # per-core speed: steadier on a shared machine; scaled by threads below
    x = rng.standard_normal((rows, hidden)).astype(np.float32)
    sessions = {}
    for name, graph in graphs.items():
        model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)
        sessions[name] = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        sessions[name].run(None, {"x": x})
    best = {name: float("inf") for name in sessions}
    deadline = time.perf_counter() + budget_s
    runs = 0
    while runs < 3 or (time.perf_counter() < deadline and runs < 50):
        for name, s in sessions.items():  # interleaved: both see the same machine load
            t = time.perf_counter()
            s.run(None, {"x": x})
            best[name] = min(best[name], time.perf_counter() - t)
        runs += 1
    flops = 2.0 * rows * hidden * inter
    a = rng.standard_normal(1_000_000).astype(np.float32)
    t = time.perf_counter()
    np.histogram(a, 2048, range=(-5, 5))
    hist_rate = a.size / max(time.perf_counter() - t, 1e-6)
    return {"fp32_gflops": flops / best["fp32"] / 1e9, "int8_gflops": flops / best["int8"] / 1e9,
            "speedup": best["fp32"] / best["int8"], "histogram_values_per_s": hist_rate, "runs": runs}


def _probe(ctx: CheckContext) -> dict[str, float] | None:
    def compute() -> Memo:
        config = get_config(ctx).value
        dims = hidden_dims(config) if config is not None else None
        if dims is None or not ctx.probe:
            return Memo(None)
        try:
            return Memo(matmul_probe(dims["hidden"], dims["intermediate"]))
        except Exception as exc:  # noqa: BLE001 - a probe failure only costs the estimate
            logger.debug("matmul probe failed: %s", exc, exc_info=True)
            return Memo(None)

    return ctx.memo("probe", compute).value


def _available_memory(ctx: CheckContext) -> int:
    if ctx.memory_available is not None:
        return ctx.memory_available
    import psutil

    return int(psutil.virtual_memory().available)


# --------------------------------------------------------------------------- checks
@check("cost.disk", stage="cost")
def check_disk(ctx: CheckContext) -> list[Problem]:
    """The disks hold the FP32 export, the work files and the artifacts (sizes from the parameter count)."""
    size = model_size(ctx)
    if size is None:
        return []
    params, emb = size["params"], min(size["embedding_params"], size["params"])
    q = ctx.spec.quantization
    fp32 = params * 4
    int8 = (params - emb) + emb * (1 if "Gather" in q.op_types else 4)
    target = ctx.output_dir or (Path(ctx.spec.output.dir) if ctx.spec.output.dir else None)
    out_base = nearest_existing(Path(target).expanduser().resolve().parent) if target else None
    tmp_base = Path(tempfile.gettempdir())
    needs: dict[Path, int] = {}
    if ctx.tune:
        t = ctx.spec.tuning
        trials = t.max_trials if t is not None else 20
        if out_base is not None:
            needs[out_base] = fp32 * 3 + trials * int8 + int8 * 2
    else:
        needs[tmp_base] = fp32 * (3 if ctx.static_used else 2) + int8
        if out_base is not None:
            keep_fp32 = getattr(ctx.spec.output, "keep_fp32", False)  # output.keep_fp32, where the spec has it
            needs[out_base] = needs.get(out_base, 0) + (int8 + (fp32 if keep_fp32 else 0)) * (
                2 if ctx.overwrite else 1) + 20 * MB
    by_device: dict[int, tuple[Path, int, int]] = {}
    for base, need in needs.items():
        try:
            st = base.stat()
            free = shutil.disk_usage(base).free
        except OSError:
            continue
        prev = by_device.get(st.st_dev)
        by_device[st.st_dev] = (prev[0] if prev else base, need + (prev[1] if prev else 0), free)
    problems: list[Problem] = []
    for base, need, free in by_device.values():
        where = "the artifact folder" if base == out_base else f"the temporary folder {base}"
        if need > free:
            problems.append(error("output.dir", f"not enough disk space: the run writes about {_human(need)} "
                                  f"(FP32 ONNX {_human(fp32)}, int8 {_human(int8)}) on the disk of {where} "
                                  f"({base}), which has {_human(free)} free",
                                  "free space, or choose another output.dir / TMPDIR"))
        elif need > 0.9 * free:
            problems.append(warning("output.dir", f"the run writes about {_human(need)} on the disk of {where} "
                                    f"({base}), {_human(free)} free: tight"))
    ctx.add_estimate("disk", f"artifacts ≈ {_human(int8)} (int8 model), FP32 ONNX ≈ {_human(fp32)}; "
                     f"{size['params'] / 1e6:.1f}M parameters ({size['source']})",
                     params=params, fp32_bytes=fp32, int8_bytes=int8,
                     needs={str(b): n for b, n, _ in by_device.values()})
    return problems


@check("cost.memory", stage="cost")
def check_memory(ctx: CheckContext) -> list[Problem]:
    """Calibration (or QAT) memory for the chosen method and sample count fits in the RAM available."""
    config = get_config(ctx).value
    dims = hidden_dims(config) if config is not None else None
    size = model_size(ctx)
    if dims is None or size is None:
        return []
    spec = ctx.spec
    seq = spec.data.max_length
    available = _available_memory(ctx)
    cal = spec.data.calibration
    view = get_rows(ctx, "data.calibration", cal).value if cal is not None else None
    rows = rows_used(cal, view) if (cal is not None and view is not None) else None
    worst: tuple[dict[str, Any], str, QuantizationConfig] | None = None
    for origin, cfg in candidate_configs(ctx):
        if cfg.approach != "static":
            continue
        samples = min(cfg.calibration.num_samples, rows) if rows else cfg.calibration.num_samples
        est = calibration_memory(dims, params=size["params"], config=cfg, seq=seq, samples=max(samples, 1))
        if worst is None or est["peak"] > worst[0]["peak"]:
            worst = (est, origin, cfg)
    problems: list[Problem] = []
    # export: the float32 weights in PyTorch, the traced graph's copy and the ONNX file written (a causal LM's tied
    # head is a second, transposed table there), then ONNX Runtime's session of it while quantizing and evaluating
    export_peak = size["params"] * 4 * EXPORT_COPIES
    ctx.add_estimate("export_memory", f"export ≈ {_human(export_peak)} peak of {_human(available)} available "
                     f"({size['params'] / 1e6:.1f}M float32 parameters, about {EXPORT_COPIES} copies)",
                     peak_bytes=export_peak, available_bytes=available)
    if export_peak > available:
        problems.append(error("model.name_or_path", f"exporting this model needs about {_human(export_peak)} of RAM "
                              f"({size['params'] / 1e6:.0f}M float32 parameters, {EXPORT_COPIES} copies while "
                              f"tracing and writing ONNX) but {_human(available)} are available",
                              "use a machine with more memory, or a smaller model"))
    if spec.quantization.approach == "qat" and spec.qat is not None:
        b = spec.qat.batch_size
        h, heads, layers = dims["hidden"], dims["heads"], dims["layers"]
        activations = b * seq * layers * (34 * h + 5 * heads * seq) * 2  # bytes (the usual transformer estimate)
        need = size["params"] * 4 * 4 + activations
        ctx.add_estimate("qat_memory", f"QAT training ≈ {_human(need)} of {_human(available)} available "
                         f"(batch {b} × {seq} tokens)", peak_bytes=need, available_bytes=available)
        if need > available:
            problems.append(error("qat.batch_size", f"QAT training would need about {_human(need)} of RAM "
                                  f"(weights, gradients, optimizer state and batch {b} × {seq} tokens of "
                                  f"activations) but {_human(available)} are available",
                                  "lower qat.batch_size or data.max_length"))
    if worst is None:
        return problems
    est, origin, cfg = worst
    method = cfg.calibration.method
    key = "quantization.calibration.method" if origin == "quantization" else "tuning.space.calibration.method"
    if method == "minmax" or backend_class(cfg.backend).needs_torch:
        key = key.replace(".method", ".batch_size")
    breakdown = ", ".join(f"{k} {_human(v)}" for k, v in est["parts"].items())
    ctx.add_estimate("calibration_memory", f"{method} calibration ({cfg.backend}) ≈ {_human(est['peak'])} peak of "
                     f"{_human(available)} available ({breakdown})", peak_bytes=est["peak"],
                     available_bytes=available, method=method, parts=est["parts"])
    fix = ("use calibration.method: minmax (ranges reduced inside the graph), or lower "
           "calibration.batch_size (up to 8 batches are held at once) or data.max_length")
    if est["peak"] > available:
        problems.append(error(key, f"{method} calibration would need about {_human(est['peak'])} of RAM "
                              f"({breakdown}; {dims['layers']} layers × {seq} tokens, float32) but "
                              f"{_human(available)} are available", fix))
    elif est["peak"] > 0.8 * available:
        problems.append(warning(key, f"{method} calibration needs about {_human(est['peak'])} of the "
                                f"{_human(available)} of RAM available", fix))
    return problems


#: Float32 copies of the weights alive at the export's peak (PyTorch, the trace, the serialized ONNX).
EXPORT_COPIES = 3


def export_seconds(dims: dict[str, int]) -> float:
    """torch.onnx export and its validation run, by model size: about 8 s for MiniLM-L6 (22M parameters)."""
    params = dims["layers"] * 12 * dims["hidden"] ** 2 + dims.get("vocab", 30522) * dims["hidden"]
    return 4.0 + params / 5e6


def _decode_seconds(task: Any, lat: Any, dims: dict[str, int], head: float, rate: float, rounds: int,
                    prefill_s: float) -> float:
    """A generating task's decode timing: per round, both models prefill then step one token at a time."""
    steps = lat.warmup + task.decode_steps(lat)
    step_s = (forward_flops(dims, 1) + head) / rate * lat.batch_size
    return rounds * (2 * PROCESS_START_S + 2 * (prefill_s + steps * step_s))


@check("cost.duration", stage="cost")
def check_duration(ctx: CheckContext) -> list[Problem]:
    """Expected duration of tokenization, calibration, evaluation and latency runs, from timed probes."""
    config = get_config(ctx).value
    dims = hidden_dims(config) if config is not None else None
    probe = _probe(ctx)
    if dims is None or probe is None:
        return []
    spec = ctx.spec
    seq = spec.data.max_length

    threads = spec.evaluation.latency.threads or default_threads()
    rate = probe["fp32_gflops"] * 1e9 * max(1.0, threads * THREAD_EFFICIENCY)  # FLOP/s of the whole run
    task = get_task_object(ctx).value
    generates = task is not None and task.decode_steps(spec.evaluation.latency) > 0
    head = 2.0 * dims["hidden"] * dims.get("vocab", 0) if generates else 0.0  # a causal LM's vocabulary projection
    fp32_s = (forward_flops(dims, seq) + head * seq) / rate
    weight_only = spec.quantization.approach == "weight_only"  # float arithmetic on fewer weight bytes
    int8_s = fp32_s if weight_only else fp32_s / max(probe["speedup"], 0.1)
    ev = get_rows(ctx, "data.evaluation", spec.data.evaluation).value
    n_eval = rows_used(spec.data.evaluation, ev) if ev is not None else 0
    tok = tokenized_sample(ctx).value
    if task is not None and task.one_document and tok is not None:  # rows are the text's windows
        n_eval = len(tok["inputs"]["input_ids"])
        n_eval = min(n_eval, spec.data.evaluation.limit or n_eval)
    per_row = tok["seconds_per_row"] if tok else 0.0
    cal = spec.data.calibration
    cv = get_rows(ctx, "data.calibration", cal).value if (cal is not None and ctx.calibration_used) else None
    n_cal_rows = rows_used(cal, cv) if (cal is not None and cv is not None) else 0
    one_document = task is not None and task.one_document  # the text is tokenized once, then cut into windows
    tokenize = per_row * ((1 if one_document else n_eval) + n_cal_rows)
    evaluate = n_eval * (fp32_s + int8_s)
    lat = spec.evaluation.latency
    if spec.tuning is not None and spec.tuning.latency is not None:
        lat = spec.tuning.latency
    lat_seq = lat.sequence_length or seq
    lat_fp32 = forward_flops(dims, lat_seq) / rate * lat.batch_size
    speedup = 1.0 if weight_only else max(probe["speedup"], 0.1)
    # fresh-process rounds, interleaved: as many as establish the ratio (MIN_DECISION_ROUNDS) when adaptive
    rounds = max(lat.rounds, MIN_DECISION_ROUNDS) if lat.round_budget > lat.rounds else lat.rounds
    per_round = (lat.warmup + lat.repeats) * lat_fp32
    latency = rounds * (2 * PROCESS_START_S + per_round * (1 + 1 / speedup))
    latency += _decode_seconds(task, lat, dims, head, rate, rounds, lat_fp32) if generates else 0.0
    hardware = 0.0
    if ctx.tune is False and will_probe(spec, getattr(config, "model_type", None)):
        # 3 fusion levels built (optimize + quantize each) then timed with FP32, MIN_DECISION_ROUNDS rounds at
        # least; the headline then continues from the probe's rounds (one more round)
        builds = len(PROBED_LEVELS) * (BUILD_S + export_seconds(dims))
        hardware = builds + MIN_DECISION_ROUNDS * (4 * PROCESS_START_S + per_round * (1 + 3 / speedup))
        latency = 2 * PROCESS_START_S + per_round * (1 + 1 / speedup)
    grid_s = 0.0
    grid = spec.evaluation.shapes
    if grid is not None:
        examples = min(grid.examples, n_eval or grid.examples)
        for b_, s_ in itertools.product(grid.batch_sizes, grid.sequence_lengths):
            one = forward_flops(dims, s_) / rate  # one example at this length
            runs = examples * (2 if b_ > 1 else 1)  # alone (once per length) and batched
            grid_s += runs * one * (1 + 1 / speedup) / max(len(grid.batch_sizes), 1)
            if grid.latency:
                per = (min(lat.warmup, 2) + min(lat.repeats, GRID_REPEATS)) * one * b_
                grid_s += max(lat.rounds, MIN_DECISION_ROUNDS) * per * (1 + 1 / speedup)
    export = export_seconds(dims)
    calibrate = 0.0
    q = spec.quantization
    if q.approach == "static":
        n = min(q.calibration.num_samples, n_cal_rows or q.calibration.num_samples)
        calibrate = n * fp32_s * 1.5
        if q.calibration.method != "minmax":
            floats = calibrated_floats_per_token(dims, seq, q.op_types) * seq * n
            calibrate += floats * 2 / probe["histogram_values_per_s"]
    total = LOAD_S + export + tokenize + calibrate + evaluate + latency + hardware + grid_s
    values: dict[str, Any] = {"export_s": export, "tokenize_s": tokenize, "calibrate_s": calibrate,
                              "evaluate_s": evaluate, "latency_s": latency, "hardware_probe_s": hardware,
                              "shapes_s": grid_s, "fp32_ms_per_example": fp32_s * 1e3, "total_s": total,
                              "threads": threads}
    parts = [f"export {_duration(export)}", f"tokenize {_duration(tokenize)}"]
    parts += [f"calibrate {_duration(calibrate)}"] if calibrate else []
    unit = "windows" if task is not None and task.one_document else "rows"
    parts += [f"evaluate {n_eval} {unit} × 2 models {_duration(evaluate)}"]
    parts += [f"hardware probe {_duration(hardware)} (first run on this CPU; cached after)"] if hardware else []
    parts += [f"latency {_duration(latency)}"] + ([f"shape grid {_duration(grid_s)}"] if grid_s else [])
    summary = (f"≈ {_duration(total)}: " + ", ".join(parts) + f" (timed here: FP32 MatMul {probe['fp32_gflops']:.0f} "
               f"GFLOP/s per thread, {threads} thread(s))")
    problems: list[Problem] = []
    if ctx.tune and spec.tuning is not None:
        configs = candidate_configs(ctx)
        trials = min(spec.tuning.max_trials, max(len(configs) - 1, 1) if spec.tuning.space else 1)
        per_trial = n_eval * int8_s + latency / 2 + calibrate
        search = trials * per_trial
        values.update(trials=trials, search_s=search)
        summary += f"; tuning ≈ {_duration(search)} for up to {trials} trial(s)"
        timeout = spec.tuning.timeout
        if timeout is not None and search > timeout:
            problems.append(warning("tuning.timeout", f"{timeout:.0f} s is likely to stop the search after about "
                                    f"{max(int(timeout // max(per_trial, 1e-9)), 0)} of {trials} trials "
                                    f"(≈ {_duration(per_trial)} per trial here)",
                                    "raise tuning.timeout, or narrow tuning.space"))
    ctx.add_estimate("duration", summary, **values)
    return problems


@check("cost.int8", stage="cost")
def check_int8_speed(ctx: CheckContext) -> list[Problem]:
    """Whether int8 is expected to be faster than FP32 on this CPU (ISA detection + the timed probe). Weight-only
    quantization is not int8 x int8 arithmetic (its speed comes from reading fewer weight bytes): not probed."""
    if ctx.spec.quantization.approach == "weight_only":
        return []
    cpu = cpu_info()
    probe = _probe(ctx)
    isa = ", ".join(cpu.features) or "none of the int8 features"
    vnni = "VNNI" if cpu.has_vnni else "no VNNI"
    if probe is None:
        ctx.add_estimate("int8_speed", f"{cpu.model}: {isa} ({vnni}); not measured", has_vnni=cpu.has_vnni)
        return []
    speedup = probe["speedup"]
    note = "" if cpu.has_vnni else "; without VNNI the u8s8 kernels can saturate: reduce_range: true if accuracy drops"
    ctx.add_estimate("int8_speed", f"int8 MatMul {speedup:.1f}x the speed of FP32 on this CPU ({cpu.model}; "
                     f"{isa}; {vnni}){note}", speedup=speedup, has_vnni=cpu.has_vnni, features=list(cpu.features),
                     fp32_gflops=probe["fp32_gflops"], int8_gflops=probe["int8_gflops"])
    problems: list[Problem] = []
    outlook = _target_outlook(ctx)
    if outlook:
        problems.append(warning("quantization.approach", outlook, "see the hardware target's defaults"))
    if speedup < 1.1:
        problems.append(warning("quantization.approach", f"int8 is not expected to be faster on this CPU: the probe "
                                f"ran int8 MatMul at {speedup:.2f}x FP32 ({isa}; {vnni}); expect a smaller model, not "
                                "a faster one", "run on a CPU with AVX512-VNNI/AVX-VNNI/AMX for int8 speed-ups"))
    return problems


def _target_outlook(ctx: CheckContext) -> str | None:
    """The hardware target's int8 outlook (``quantkit.hardware.hardware_profile``, issue #5) when it exists."""
    try:
        profile = hardware_profile(getattr(ctx.spec, "hardware", "auto"))
        return profile.int8_outlook(ctx.spec.quantization.approach)
    except Exception as exc:  # noqa: BLE001 - an unknown target is the spec's problem
        logger.debug("hardware profile unavailable: %s", exc)
        return None
