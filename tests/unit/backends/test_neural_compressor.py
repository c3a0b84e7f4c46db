"""Intel Neural Compressor backend (PT2E static/dynamic) and torchao QAT on the tiny BERT."""

from __future__ import annotations

import copy

import numpy as np
import onnxruntime as ort
import pytest
import torch

from quantkit.backends import get_backend
from quantkit.data import load_text_dataset
from quantkit.errors import QuantizationError, SpecError
from quantkit.graph import graph_summary
from quantkit.qat import dynamic_shapes, example_inputs, input_names, prepare_qat, train_qat
from quantkit.spec import DatasetSpec, QATSpec, QuantizationConfig
from quantkit.specio import parse_spec
from quantkit.tasks import task_for


@pytest.fixture(scope="module")
def train_data(tiny_loaded, tiny_data_dir):
    return load_text_dataset(DatasetSpec(path=str(tiny_data_dir / "train.jsonl")), tiny_loaded.tokenizer,
                             task_for("text-classification", tiny_loaded.config), key="data.calibration",
                             max_length=32, padding="max_length")


def _logits(path, data):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return np.concatenate([sess.run(None, b)[0] for b in data.batches(16, names)])


@pytest.mark.parametrize("approach", ["static", "dynamic"])
def test_inc_ptq_exports_folded_int8_qdq(approach, tiny_loaded, tiny_fp32, train_data, tmp_path):
    config = QuantizationConfig(backend="neural-compressor", approach=approach, op_types=["MatMul", "Gather"],
                                calibration={"num_samples": 32, "batch_size": 8})
    q = get_backend("neural-compressor").quantize(tiny_fp32, config, tmp_path / "q" / "model.onnx",
                                                  calibration=train_data, workdir=tmp_path, loaded=tiny_loaded)
    ops, inits = q.summary["ops"], q.summary["initializer_types"]
    assert ops["DequantizeLinear"] >= 2 * 6 + 2  # every Linear's weight, plus embedding tables
    assert inits["INT8"] >= 2 * 6 + 2 + 1
    weight_q = [n for n in ("QuantizeLinear",) if ops.get(n, 0) >= 2 * 6 + 2]
    assert not weight_q, "weight QuantizeLinear must be folded into int8 initializers"
    if approach == "dynamic":
        assert ops["DynamicQuantizeLinear"] >= 1
    assert not (tmp_path / "q" / "raw.onnx").exists()
    assert q.summary["size_bytes"] < graph_summary(tiny_fp32.path)["size_bytes"]
    # symbolic axes survive and the model runs at other shapes
    sess = ort.InferenceSession(str(q.path), providers=["CPUExecutionProvider"])
    for inp in sess.get_inputs():
        assert all(isinstance(d, str) for d in inp.shape), inp.shape
    ref, got = _logits(tiny_fp32.path, train_data), _logits(q.path, train_data)
    np.testing.assert_allclose(got, ref, atol=0.05, rtol=0)


def test_qat_step_updates_every_trainable_parameter_and_keeps_frozen_ones(tiny_loaded, train_data):
    torch.manual_seed(0)
    model = copy.deepcopy(tiny_loaded.model)
    names = input_names(train_data)
    prepared = prepare_qat(model, example_inputs(train_data), dynamic_shapes(names, 128))
    fake_quant = [m for m in prepared.modules() if "FakeQuantize" in type(m).__name__]
    assert len(fake_quant) >= 2 * 6 + 2  # weights of every Linear, plus activations
    params = dict(prepared.named_parameters())
    frozen_names = [n for n in params if "embeddings" in n]
    assert frozen_names
    for n in frozen_names:
        params[n].requires_grad_(False)
    before = {n: p.detach().clone() for n, p in params.items()}
    trainable = [p for p in params.values() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-3)
    batch = train_data.batch(0, 16, names)
    x = [torch.from_numpy(batch[n]) for n in names]
    y = torch.from_numpy(train_data.labels[:16])
    losses = []
    for step in range(8):
        out = prepared(*x)
        logits = out[0] if isinstance(out, (tuple, list)) else out.logits
        loss = torch.nn.functional.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        if step == 0:
            for n, p in params.items():
                if p.requires_grad:
                    assert p.grad is not None and torch.count_nonzero(p.grad) > 0, n
                else:
                    assert p.grad is None, n
        opt.step()
        losses.append(loss.item())
        if step == 0:
            for n, p in params.items():
                if p.requires_grad:
                    assert not torch.equal(p.detach(), before[n]), f"{n} did not change"
    assert all(np.isfinite(losses)) and min(losses) > 0
    assert losses[-1] < losses[0]
    for n in frozen_names:
        assert torch.equal(params[n].detach(), before[n]), f"frozen {n} changed"


def test_train_qat_loop_freezes_patterns_and_resumes(tiny_loaded, train_data, tmp_path):
    task = task_for("text-classification", tiny_loaded.config)
    spec = QATSpec(steps=6, learning_rate=1e-3, batch_size=16, freeze=["bert.embeddings.*"], holdout=0.2,
                   early_stopping={"eval_every": 3, "patience": 5}, checkpoint_every=3, num_workers=0)
    first = train_qat(copy.deepcopy(tiny_loaded.model), train_data, spec, max_positions=128, task=task,
                      state_dir=tmp_path)
    assert first.steps == 6 and len(first.losses) == 6 and all(np.isfinite(first.losses))
    assert [s for s, _ in first.holdout_accuracy] == [3, 6]
    assert (tmp_path / "qat-checkpoint.pt").is_file()
    again = train_qat(copy.deepcopy(tiny_loaded.model), train_data, spec, max_positions=128, task=task,
                      state_dir=tmp_path)
    assert again.resumed_from == 6 and again.steps == 6  # nothing left to do: resumed, not retrained
    with pytest.raises(QuantizationError, match="matched no parameter"):
        train_qat(copy.deepcopy(tiny_loaded.model), train_data, spec.model_copy(update={"freeze": ["nope.*"]}),
                  max_positions=128, task=task)


def test_qat_backend_exports_onnx_matching_converted_model(tiny_loaded, tiny_fp32, train_data, tmp_path):
    config = QuantizationConfig(backend="neural-compressor", approach="qat", op_types=["MatMul"])
    backend = get_backend("neural-compressor")
    q = backend.quantize(tiny_fp32, config, tmp_path / "model.onnx", calibration=train_data, workdir=tmp_path,
                         loaded=tiny_loaded, qat=QATSpec(steps=4, batch_size=16, num_workers=0, early_stopping=None))
    assert q.details["training"]["steps"] == 4
    assert len(q.details["training"]["losses"]) == 4 and q.details["training"]["loss_every"] == 1
    assert q.summary["initializer_types"]["INT8"] >= 2 * 6
    assert np.isfinite(_logits(q.path, train_data)).all()


def _spec(quantization):
    return {"spec_version": 1, "quantization": quantization,
            "data": {"evaluation": {"path": "v.jsonl"}, "calibration": {"path": "t.jsonl"}}}


@pytest.mark.parametrize(("quantization", "path", "fragment"), [
    ({"smooth_quant": True, "backend": "neural-compressor"}, "quantization.smooth_quant",
     "only through intel-extension-for-pytorch (IPEX), which has no build for torch 2.13"),
    ({"approach": "qat"}, "quantization.approach", "set backend: neural-compressor"),
    ({"backend": "neural-compressor", "approach": "static", "format": "qoperator"}, "quantization.format",
     "QDQ graphs only"),
    ({"backend": "neural-compressor", "approach": "static", "calibration": {"method": "percentile"}},
     "quantization.calibration", "percentile is onnxruntime-only"),
    ({"backend": "tensorrt"}, "quantization.backend", "'tensorrt' is not one of"),
])
def test_backend_specific_spec_errors(quantization, path, fragment):
    with pytest.raises(SpecError) as info:
        parse_spec(_spec(quantization), file="inc.yaml")
    assert f"inc.yaml: {path}: " in str(info.value) and fragment in str(info.value)


def test_qat_section_needs_qat_approach():
    with pytest.raises(SpecError, match="qat: only used with quantization.approach: qat"):
        parse_spec({**_spec({}), "qat": {"steps": 3}})
    spec = parse_spec({**_spec({"approach": "qat", "backend": "neural-compressor"}), "qat": {"epochs": 2}})
    assert spec.qat.total_steps(100) == 2 * 7


def test_qat_model_is_deterministic_after_conversion(tiny_loaded, train_data):
    """Attention dropout baked into SDPA at export must be off once trained (and during held-out eval)."""
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    from quantkit.qat import set_attention_dropout

    names = input_names(train_data)
    prepared = prepare_qat(copy.deepcopy(tiny_loaded.model), example_inputs(train_data), dynamic_shapes(names, 128))
    before = set_attention_dropout(prepared, 0.0)
    assert before and all(p > 0 for p in before.values())  # BERT's attention dropout (0.1) was baked in
    assert set_attention_dropout(prepared, before) == {k: 0.0 for k in before}  # restores
    move_exported_model_to_eval(prepared)
    set_attention_dropout(prepared, 0.0)
    converted = convert_pt2e(prepared)
    x = [torch.from_numpy(v) for v in train_data.batch(0, 8, names).values()]
    with torch.inference_mode():
        a, b = converted(*x), converted(*x)
    a, b = (a[0] if isinstance(a, (tuple, list)) else a.logits), (b[0] if isinstance(b, (tuple, list)) else b.logits)
    assert torch.equal(a, b)
