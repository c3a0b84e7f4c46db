"""The encoder-family support matrix (issue #14): every family of :mod:`quantkit.families` × the cells of
:data:`quantkit.families.MATRIX_TASKS`, on tiny random models built here (tests/tiny_families.py), each with a
tokenizer of its family's kind.

Which cells run: every quantization route (ONNX Runtime dynamic and static QDQ, Intel Neural Compressor
PT2E static and dynamic, QAT) for text classification, the one task every route and QAT support; export and
ONNX Runtime dynamic (the default route) for token classification, sentence embeddings and extractive QA,
whose heads differ from the classifier's only in the last Linear. That is 9 × 7 + 9 × 3 × 2 cells; the
PT2E routes dominate the time (torch.export and the dynamo ONNX export, ~5 s each), so they run once per
family, not once per task.

Every quantized cell asserts: the export matches PyTorch at ≥ 3 shapes; the int8 graph keeps symbolic batch
and sequence axes and runs at 3 shapes; every Linear layer the model calls is quantized (counted with hooks
on the PyTorch model: 3-D calls become MatMul, 2-D ones Gemm) and so is every embedding table where Gather
is quantized; int8 outputs are within ``BOUND`` of FP32 on tokenized test text; the artifact folder loads
with the task's ``ORTModelFor*`` class and gives the session's outputs. A cell the family data marks as
refused must be refused by the pre-flight instead.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_families import POSITIONS, build_family_model

from quantkit.families import FAMILIES, MATRIX_TASKS, QUANTIZE_CELLS, cell_status

#: int8 outputs vs FP32 on the tokenized test text: max |int8 − FP32| ≤ BOUND × max |FP32| (real tokens only).
#: Measured worst: 0.11 (DeBERTa-v2 QAT, whose random classifier logits are ~0.003); a broken graph is ~1.
BOUND = 0.15
#: (batch, sequence) shapes checked beyond the export's own validation; the last is the longest allowed.
SHAPES = [(1, 7), (3, 37), (2, POSITIONS)]
EXPORT_ATOL = 1e-4
_DATA = {  # task → (data file key, text columns, label column, max_length)
    "text-classification": ("text", None, "label", 32),
    "token-classification": ("token-classification", None, "auto", 32),
    "feature-extraction": ("feature-extraction", ["sentence1", "sentence2"], "score", 32),
    "question-answering": ("question-answering", None, "auto", 64),
}


@dataclass
class Tiny:
    """One family's tiny model of one task, exported once per session."""

    model_type: str
    task_name: str
    path: Path
    loaded: Any
    task: Any
    fp32: Any
    evaluation: Any
    calibration: Any
    reference: dict[str, np.ndarray]
    linear3d: int
    linear2d: int
    embeddings: dict[str, int]  # embedding call → table rows


def _module_calls(model: Any, example: dict[str, Any]) -> tuple[int, int, dict[str, int]]:
    """Linear calls on 3-D (sequence) and 2-D (pooled) inputs and embedding lookups of one forward."""
    import torch

    calls = Counter()
    embeddings: dict[str, int] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            hooks.append(module.register_forward_hook(
                lambda m, args, out: calls.update(["3d" if args[0].dim() == 3 else "2d"])))
        elif isinstance(module, torch.nn.Embedding):
            hooks.append(module.register_forward_hook(
                lambda m, args, out, name=name: embeddings.__setitem__(name, m.num_embeddings)))
    with torch.inference_mode():
        model(**example)
    for h in hooks:
        h.remove()
    return calls["3d"], calls["2d"], embeddings


def _outputs(path: Path, data: Any, names: list[str]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = [i.name for i in session.get_inputs()]
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for batch in data.batches(16, inputs):
        for n, out in zip([o.name for o in session.get_outputs()], session.run(None, batch)):
            if n in parts:
                parts[n].append(out)
    return {n: np.concatenate(v) for n, v in parts.items()}


@pytest.fixture(scope="session")
def tiny_family(tmp_path_factory, tiny_data_dir, tiny_task_data):
    """``get(model_type, task)`` → :class:`Tiny`, built, loaded and exported once per session."""
    import torch

    from quantkit.data import load_text_dataset
    from quantkit.export import export_onnx
    from quantkit.models import load_model
    from quantkit.spec import DatasetSpec, ExportSpec
    from quantkit.tasks import task_for

    cache: dict[tuple[str, str], Tiny] = {}

    def get(model_type: str, task_name: str) -> Tiny:
        if (model_type, task_name) in cache:
            return cache[(model_type, task_name)]
        root = tmp_path_factory.mktemp(f"{model_type}-{task_name}")
        path = build_family_model(model_type, task_name, root / "model")
        loaded = load_model(str(path))
        task = task_for(task_name, loaded.config, None, path)
        fp32 = export_onnx(loaded, root / "fp32", ExportSpec())
        key, text, label, max_length = _DATA[task_name]
        if task_name == "text-classification":
            eval_file, cal_file = tiny_data_dir / "validation.jsonl", tiny_data_dir / "train.jsonl"
        else:
            eval_file = cal_file = tiny_task_data[key]
        common = dict(max_length=max_length, padding="max_length")
        evaluation = load_text_dataset(DatasetSpec(path=str(eval_file), text_columns=text, label_column=label),
                                       loaded.tokenizer, task, key="data.evaluation", **common)
        calibration = load_text_dataset(DatasetSpec(path=str(cal_file), text_columns=text, label_column=label),
                                        loaded.tokenizer, task, key="data.calibration", **common)
        example = {k: torch.from_numpy(v) for k, v in evaluation.batch(0, 2, fp32.input_names).items()}
        l3, l2, emb = _module_calls(loaded.model, example)
        reference = _outputs(fp32.path, evaluation, list(task.output_names))
        cache[(model_type, task_name)] = Tiny(model_type, task_name, path, loaded, task, fp32, evaluation,
                                              calibration, reference, l3, l2, emb)
        return cache[(model_type, task_name)]

    return get


# --------------------------------------------------------------------------- graph facts
def quantized_consumers(path: Path) -> Counter:
    """Nodes that read an int8/uint8 initializer as their weight (directly, or through DequantizeLinear /
    Transpose / Reshape): MatMul, Gemm, MatMulInteger, DynamicQuantizeMatMul, QAttention (input 1), Gather
    (input 0)."""
    import onnx

    proto = onnx.load(str(path))
    int8 = {i.name for i in proto.graph.initializer if i.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)}
    producer = {o: n for n in proto.graph.node for o in n.output}

    def from_int8(name: str, depth: int = 0) -> bool:
        if name in int8:
            return True
        node = producer.get(name)
        if node is None or depth > 3 or node.op_type not in ("DequantizeLinear", "Transpose", "Reshape"):
            return False
        return from_int8(node.input[0], depth + 1)

    counts = Counter()
    for node in proto.graph.node:
        weight = {"Gather": 0}.get(node.op_type, 1)
        if node.op_type in ("MatMul", "Gemm", "MatMulInteger", "DynamicQuantizeMatMul", "QAttention", "Gather") \
                and len(node.input) > weight and from_int8(node.input[weight]):
            counts[node.op_type] += 1
    return counts


def weight_nodes(path: Path) -> Counter:
    """FP32 nodes with a float weight initializer (MatMul/Gemm/Attention input 1, Gather input 0) whose other
    input depends on the graph inputs: what int8 must cover. (A Linear applied to a constant, as DeBERTa's
    projections of its relative-position table, is folded into a constant by pre-processing.)"""
    import onnx

    proto = onnx.load(str(path))
    dynamic = {i.name for i in proto.graph.input}
    counts = Counter()
    for node in proto.graph.node:  # topological order
        weight, other = (0, 1) if node.op_type == "Gather" else (1, 0)
        if node.op_type in ("MatMul", "Gemm", "Attention", "Gather") and len(node.input) > 1 \
                and node.input[weight] not in dynamic and node.input[other] in dynamic:
            counts[node.op_type] += 1  # a constant weight (an initializer, or one transposed: ALBERT's shared layers)
        if any(i in dynamic for i in node.input):
            dynamic.update(node.output)
    return counts


def _random_feeds(input_names: list[str], batch: int, seq: int, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {"input_ids": rng.integers(5, vocab, (batch, seq), dtype=np.int64),
             "attention_mask": np.ones((batch, seq), dtype=np.int64),
             "token_type_ids": np.zeros((batch, seq), dtype=np.int64)}
    feeds["attention_mask"][1:, seq - seq // 3:] = 0  # padded rows
    return {n: feeds[n] for n in input_names}


def _check_shapes(path: Path, tiny: Tiny) -> None:
    """Symbolic batch/sequence axes on every input, and outputs of the right shape at every test shape."""
    import onnxruntime as ort

    from quantkit.export import symbolic_axes

    for name, dims in symbolic_axes(path).items():
        assert isinstance(dims[0], str) and isinstance(dims[1], str), f"{path.name}: input {name} dims {dims}"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    outs = [o.name for o in session.get_outputs()]
    for batch, seq in SHAPES:
        got = dict(zip(outs, session.run(None, _random_feeds(names, batch, seq, tiny.loaded.config.vocab_size))))
        for out_name in tiny.task.output_names:
            value = got[out_name]
            assert np.isfinite(value).all(), (out_name, batch, seq)
            assert value.shape[0] == batch, (out_name, value.shape, batch)
            if 1 in tiny.task.output_axes.get(out_name, {}) and "sequence" in tiny.task.output_axes[out_name][1]:
                assert value.shape[1] == seq, (out_name, value.shape, seq)


def _has_vnni() -> bool:
    """Whether this CPU has int8 dot products (VNNI or AMX): without them u8 x s8 GEMMs can saturate."""
    from quantkit.hardware import cpu_info

    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(cpu_info().features))


def _check_close_to_fp32(path: Path, tiny: Tiny) -> float:
    """max |int8 − FP32| / max |FP32| over the task's outputs on the tokenized test text (real tokens only)."""
    got = _outputs(path, tiny.evaluation, list(tiny.task.output_names))
    mask = tiny.evaluation.inputs["attention_mask"].astype(bool)
    worst = 0.0
    for name, ref in tiny.reference.items():
        diff = np.abs(got[name] - ref)
        if ref.ndim >= 2 and ref.shape[:2] == mask.shape:  # per-token outputs: padded positions are garbage
            diff, ref = diff[mask], ref[mask]
        # relative to the FP32 range, floored at 0.01: a random head can emit logits of ~1e-4 (transformers 5 inits
        # XLM-R's classifier that small), where int8's absolute error of a few 1e-4 is no sign of a broken graph
        worst = max(worst, float(diff.max() / max(float(np.abs(ref).max()), 0.01)))
    assert worst <= BOUND, f"int8 vs FP32: max abs diff {worst:.3f} of the FP32 range > {BOUND}"
    return worst


def _check_artifact_loads(path: Path, tiny: Tiny, backend: Any, config: Any, target: Path) -> None:
    """The artifact folder (quantkit's writer) loads with quantkit's runtime (the default stack's loader; on the
    optimum stack tests/unit/test_runtime.py proves it equals ORTModelFor* for every task) and gives the session's
    outputs; a pipeline-style call returns the task's answer."""
    import onnxruntime as ort

    from quantkit.artifacts import write_artifacts
    from quantkit.runtime import Runtime

    folder = write_artifacts(target, model_path=path, model_config=tiny.loaded.config, tokenizer=tiny.loaded.tokenizer,
                             report={}, spec_yaml="spec_version: 1\n", ort_config=backend.ort_config(config, 17),
                             extra_files=tiny.task.extra_files())
    runtime = Runtime(folder, task=tiny.task_name)
    tok = tiny.loaded.tokenizer
    if tiny.task_name == "question-answering":
        batch = tok(["where is alice ?", "who is bob ?"], ["alice is in paris .", "bob is in london ."],
                    padding=True, return_tensors="np")
        answer = runtime(question="where is alice ?", context="alice is in paris .")
        assert isinstance(answer["answer"], str) and answer["start"] <= answer["end"]
    else:
        batch = tok(["alice is in paris", "free money now please"], padding=True, return_tensors="np")
        assert len(runtime(["alice is in paris", "free money now please"])) == 2
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {i.name: batch[i.name] for i in session.get_inputs()}
    direct = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    got = runtime.run(dict(batch))
    for name in tiny.task.output_names:
        np.testing.assert_allclose(got[name], direct[name], atol=1e-5, err_msg=name)


def _expected_status(model_type: str, task: str, cell: str) -> str:
    status = cell_status(model_type, task, cell)
    assert status != "untested", (model_type, task, cell)
    return status


def _assert_refused_at_preflight(tiny_path: Path, task: str, tmp_path: Path, quantization: dict, status: str) -> None:
    """A refused cell: the pre-flight names it (error) in seconds, without exporting anything."""
    import time

    import yaml

    from quantkit.checks import run_checks
    from quantkit.specio import load_spec

    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"text": "x", "label": 0}) + "\n")
    spec = {"spec_version": 1, "model": {"name_or_path": str(tiny_path), "task": task},
            "quantization": quantization, "data": {"evaluation": {"path": str(data)}, "calibration": {"path": str(data)}}}
    if quantization.get("approach") == "qat":
        spec["qat"] = {"steps": 1}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    started = time.perf_counter()
    report = run_checks(load_spec(tmp_path / "spec.yaml"), probe=False, only=["model.task", "model.family"])
    assert time.perf_counter() - started < 30
    reason = status.split(": ", 1)[1]
    assert any(reason.split(" for ")[0] in p.message or "cannot be exported" in p.message for p in report.errors), \
        [str(p) for p in report.problems]


# --------------------------------------------------------------------------- the matrix
def _text_cells() -> list[tuple[str, str]]:
    return [(mt, cell) for mt in FAMILIES for cell in MATRIX_TASKS["text-classification"]]


def _task_cells() -> list[tuple[str, str, str]]:
    return [(mt, task, cell) for task, cells in MATRIX_TASKS.items() if task != "text-classification"
            for mt in FAMILIES for cell in cells]


def run_cell(tiny_family, model_type: str, task: str, cell: str, tmp_path: Path) -> dict[str, Any]:
    """Run one matrix cell and assert everything it claims; returns what was measured."""
    from quantkit.export import symbolic_axes, validate_outputs
    from quantkit.fusion import optimize_graph, resolve_level

    status = _expected_status(model_type, task, cell)
    if status != "yes":
        path = build_family_model(model_type, task, tmp_path / "model")
        _assert_refused_at_preflight(path, task, tmp_path, QUANTIZE_CELLS.get(cell, {}), status)
        return {"status": "refused"}
    tiny = tiny_family(model_type, task)
    family = FAMILIES[model_type]
    if cell == "export":
        for dims in symbolic_axes(tiny.fp32.path).values():
            assert all(isinstance(d, str) for d in dims[:2]), dims
        diff = validate_outputs(tiny.fp32.path, tiny.loaded, [(2, 16), *SHAPES], atol=EXPORT_ATOL)
        return {"max_abs_diff": diff}
    if cell == "fusion":
        from quantkit.graph import op_counts

        _, section = optimize_graph(tiny.fp32, "transformer", tmp_path / "fused", model_type=model_type,
                                    model_config=tiny.loaded.config, atol=1e-4)
        assert set(section["fused"]) == set(family.fused_ops), section["fused"]
        # what auto runs: the same fusions with SkipLayerNormalization taken apart again
        level = resolve_level("auto", approach="dynamic", backend="onnxruntime", model_type=model_type)
        assert level == "transformer-noskip"
        auto, auto_section = optimize_graph(tiny.fp32, level, tmp_path / "auto", model_type=model_type,
                                            model_config=tiny.loaded.config, atol=1e-4)
        assert set(auto_section["fused"]) == set(family.fused_ops) - {"SkipLayerNormalization"}, auto_section["fused"]
        assert op_counts(auto.path).get("SkipLayerNormalization", 0) == 0
        return {"fused": section["fused"], "auto": auto_section["fused"]}
    return _quantize_cell(tiny, cell, tmp_path)


def _quantize_cell(tiny: Tiny, cell: str, tmp_path: Path) -> dict[str, Any]:
    from quantkit.backends import get_backend
    from quantkit.fusion import optimize_graph, resolve_level
    from quantkit.hardware import hardware_profile, resolve_quantization
    from quantkit.spec import QATSpec, QuantizationConfig

    config = QuantizationConfig(**QUANTIZE_CELLS[cell], calibration={"num_samples": 32, "batch_size": 8})
    # as a run does (`hardware: auto`): this CPU's defaults for what the cell leaves unset (on AVX2 without VNNI,
    # 7-bit weights that keep vpmaddubsw's int16 pair sums from saturating)
    config, _ = resolve_quantization(config, hardware_profile("auto"))
    source = tiny.fp32
    level = resolve_level("auto", approach=config.approach, backend=config.backend, model_type=tiny.model_type)
    if level != "none":
        source, _ = optimize_graph(tiny.fp32, level, tmp_path / "fused", model_type=tiny.model_type,
                                   model_config=tiny.loaded.config, atol=1e-4,
                                   fuse_embeddings="Gather" not in config.op_types)
    backend = get_backend(config.backend)
    q = backend.quantize(source, config, tmp_path / "q" / "model.onnx", calibration=tiny.calibration,
                         workdir=tmp_path / "work", loaded=tiny.loaded,
                         qat=QATSpec(steps=2, learning_rate=1e-6, batch_size=16, num_workers=0, early_stopping=None))
    _check_shapes(q.path, tiny)
    counts = quantized_consumers(q.path)
    if config.backend == "onnxruntime":
        # every MatMul with a weight in the graph it quantized is int8 (a fused Attention → QAttention holds
        # Q, K and V); Gemm is not in op_types; the graph's weight MatMuls are at least the encoder's Linears
        source_weights = weight_nodes(source.path)
        expected = source_weights["MatMul"] + 3 * source_weights["Attention"]
        if config.approach == "dynamic":  # pre-processing turns the pooled heads' Gemm into MatMul + Add
            expected += source_weights["Gemm"]
        assert expected >= 4 * tiny.loaded.config.num_hidden_layers, source_weights  # attention in/out, FFN in/out
        int8 = counts["MatMulInteger"] + counts["DynamicQuantizeMatMul"] + 3 * counts["QAttention"] + counts["MatMul"]
        assert int8 == expected, (counts, source_weights)
        gathers = source_weights["Gather"]
    else:  # PT2E quantizes every Linear call of the PyTorch model, the pooled heads (Gemm) included
        assert counts["MatMul"] + counts["Gemm"] == tiny.linear3d + tiny.linear2d, (counts, tiny.linear3d,
                                                                                  tiny.linear2d)
        gathers = sum(1 for rows in tiny.embeddings.values() if rows >= 16)  # qdq.quantize_gather_weights
    if "Gather" in config.op_types:  # every embedding table the graph looks up
        assert counts["Gather"] == gathers >= 1, (counts, tiny.embeddings)
    else:
        assert counts["Gather"] == 0
    if not backend.takes_hardware_defaults and not _has_vnni():
        try:
            worst = _check_close_to_fp32(q.path, tiny)
        except AssertionError as exc:  # said, not hidden: the run reports xfailed with the measured error
            pytest.xfail(f"{config.backend}'s fixed x86 scheme (s8 weights x u8 activations, full range) saturates "
                         f"vpmaddubsw's int16 pair sums on a CPU without VNNI: {exc}")
    else:
        worst = _check_close_to_fp32(q.path, tiny)
    _check_artifact_loads(q.path, tiny, backend, config, tmp_path / "artifact")
    return {"counts": dict(counts), "rel_diff": worst}


@pytest.mark.parametrize(("model_type", "cell"), _text_cells(), ids=[f"{m}-{c}" for m, c in _text_cells()])
def test_text_classification_matrix(tiny_family, model_type, cell, tmp_path):
    run_cell(tiny_family, model_type, "text-classification", cell, tmp_path)


@pytest.mark.parametrize(("model_type", "task", "cell"), _task_cells(), ids=[f"{m}-{t}-{c}" for m, t, c in _task_cells()])
def test_task_matrix(tiny_family, model_type, task, cell, tmp_path):
    run_cell(tiny_family, model_type, task, cell, tmp_path)
