"""The task registry: metrics against references (seqeval, hand-computed SQuAD and spans), pooling, and every
task end to end on tiny random models (quantize, ONNX structure, shapes, artifact loading, check, card, tune)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import task_spec, write_yaml

from quantkit.metrics import entities, entity_scores, normalize_answer, squad_f1, squad_scores, token_accuracy
from quantkit.tasks import canonical_task, get_task, infer_task_from_architectures, task_for
from quantkit.tasks.feature_extraction import pool, read_pooling
from quantkit.tasks.question_answering import best_spans

TASKS = ["token-classification", "feature-extraction", "question-answering"]


# --------------------------------------------------------------------------- registry
def test_aliases_and_architectures():
    assert canonical_task("ner") == "token-classification"
    assert canonical_task("sentence-similarity") == "feature-extraction"
    assert canonical_task("Sequence-Classification") == "text-classification"
    cfg = SimpleNamespace
    assert infer_task_from_architectures(cfg(architectures=["BertForTokenClassification"])) == "token-classification"
    assert infer_task_from_architectures(cfg(architectures=["MPNetModel"])) == "feature-extraction"
    assert infer_task_from_architectures(cfg(architectures=["DebertaV2ForQuestionAnswering"])) == "question-answering"
    assert infer_task_from_architectures(cfg(architectures=["GPT2LMHeadModel"])) == "text-generation"
    assert infer_task_from_architectures(cfg(architectures=["LlamaForCausalLM"])) == "text-generation"
    assert infer_task_from_architectures(cfg(architectures=["LlamaModel"])) == "feature-extraction"  # no LM head
    assert get_task("causal-lm").name == "text-generation"
    assert get_task("qa").output_names == ("start_logits", "end_logits")


# --------------------------------------------------------------------------- entity metrics vs seqeval
def _random_tags(rng: random.Random, n: int) -> list[str]:
    return [rng.choice(["O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC"]) for _ in range(n)]


@pytest.mark.parametrize("strict", [True, False])
def test_entity_scores_match_seqeval(strict):
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    rng = random.Random(0)
    refs = [_random_tags(rng, rng.randint(1, 12)) for _ in range(200)]
    preds = [[t if rng.random() < 0.7 else rng.choice(["O", "B-PER", "I-LOC", "I-PER"]) for t in r] for r in refs]
    kw = {"mode": "strict", "scheme": IOB2} if strict else {}
    ours = entity_scores(refs, preds, strict=strict)
    assert ours["f1"] == pytest.approx(f1_score(refs, preds, **kw), abs=1e-12)
    assert ours["precision"] == pytest.approx(precision_score(refs, preds, **kw), abs=1e-12)
    assert ours["recall"] == pytest.approx(recall_score(refs, preds, **kw), abs=1e-12)
    assert token_accuracy(refs, preds) == pytest.approx(accuracy_score(refs, preds), abs=1e-12)


def test_entity_scores_hand_computed():
    ref = [["B-PER", "I-PER", "O", "B-LOC"]]
    pred = [["B-PER", "I-PER", "O", "I-LOC"]]  # a dangling I-LOC: no entity in strict mode, one in conlleval
    assert entities(pred[0], strict=True) == [("PER", 0, 1)]
    assert entities(pred[0], strict=False) == [("PER", 0, 1), ("LOC", 3, 3)]
    strict = entity_scores(ref, pred, strict=True)
    assert (strict["precision"], strict["recall"]) == (1.0, 0.5)
    assert strict["f1"] == pytest.approx(2 / 3)
    assert entity_scores(ref, pred, strict=False)["f1"] == 1.0


# --------------------------------------------------------------------------- SQuAD and spans
def test_squad_normalisation_and_scores():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert squad_f1("the cat sat", "cat sat down") == pytest.approx(0.8)  # 2 shared of 2 predicted, 3 gold
    scores = squad_scores(["Paris", "in the park", "", "x"], [["paris", "France"], ["the park"], [], []])
    assert scores["exact_match"] == pytest.approx(2 / 4)  # "in the park" ≠ "park"; "" right for no answer
    assert scores["f1"] == pytest.approx((1 + 2 / 3 + 1 + 0) / 4)  # "in park" vs "park": P 1/2, R 1 -> 2/3


def test_best_spans_respect_context_and_length():
    start = np.array([9.0, 1.0, 5.0, 0.0])
    end = np.array([9.0, 0.0, 1.0, 4.0])
    offsets = np.array([[-1, -1], [0, 3], [4, 7], [8, 11]])  # token 0 (CLS) is outside the context
    spans, null = best_spans(start, end, offsets, n_best=4, max_answer_length=2)
    assert null == 18.0
    assert spans[0] == (9.0, 4, 11)  # tokens 2..3
    spans, _ = best_spans(start, end, offsets, n_best=4, max_answer_length=1)
    assert spans[0] == (6.0, 4, 7)  # single-token spans only


def test_question_answering_collects_across_windows_and_v2():
    task = task_for("question-answering", options=SimpleNamespace(version_2_with_negative=True,
                                                                   null_score_diff_threshold=0.0))
    data = SimpleNamespace(examples={"contexts": ["abc def", "ghi"], "count": 2})
    parts = [[(0, [(3.0, 0, 3)], 1.0), (0, [(5.0, 4, 7)], 2.0), (1, [(1.0, 0, 3)], 4.0)]]
    assert task.collect(parts, data) == ["def", ""]  # best window wins; example 1: no-answer beats the span


# --------------------------------------------------------------------------- pooling
def test_pooling_modes():
    h = np.array([[[1.0, 0.0], [3.0, 4.0], [100.0, 100.0]]], dtype=np.float32)
    mask = np.array([[1, 1, 0]])
    assert np.allclose(pool(h, mask, "mean", False), [[2.0, 2.0]])
    assert np.allclose(pool(h, mask, "cls", False), [[1.0, 0.0]])
    assert np.allclose(pool(h, mask, "max", False), [[3.0, 4.0]])
    assert np.allclose(pool(h, mask, "lasttoken", False), [[3.0, 4.0]])
    assert np.allclose(pool(h, mask, "mean_sqrt_len", False), [[4 / np.sqrt(2), 4 / np.sqrt(2)]])
    assert np.allclose(pool(h, mask, "mean", True), [[np.sqrt(0.5), np.sqrt(0.5)]])


def test_sentence_transformers_pooling_is_read(tiny_task_models, tmp_path):
    assert read_pooling(tiny_task_models["feature-extraction"])[:2] == ("mean", True)
    assert read_pooling(tmp_path)[:2] == ("mean", False)
    task = task_for("feature-extraction", options=SimpleNamespace(pooling="cls", normalize="false"),
                    model_dir=tiny_task_models["feature-extraction"])
    assert (task.pooling, task.normalize, task.pooling_source) == ("cls", False, "task_options.pooling")


def test_sentence_embedding_matches_pytorch_mean_pooling(tiny_task_models, tiny_task_data):
    """quantkit's pooled embedding of the ONNX export == the sentence-transformers computation in PyTorch."""
    import torch

    from quantkit.data import encode, load_rows
    from quantkit.evaluation import OnnxRunner
    from quantkit.export import export_onnx
    from quantkit.models import load_model
    from quantkit.spec import DatasetSpec, ExportSpec

    folder = tiny_task_models["feature-extraction"]
    loaded = load_model(str(folder))
    assert loaded.task == "feature-extraction"
    task = task_for(loaded.task, loaded.config, model_dir=folder)
    ds = DatasetSpec(path=str(tiny_task_data["feature-extraction"]), text_columns=["sentence1", "sentence2"],
                     label_column="score")
    data = encode(load_rows(ds, "data.evaluation"), loaded.tokenizer, ds, task, key="data.evaluation",
                  max_length=32, padding="longest")
    assert len(data) == 80 and data.examples["pairs"] == 40
    exported = export_onnx(loaded, folder.parent / "fe-onnx", ExportSpec())
    emb = OnnxRunner(exported.path, 1).run(data, 7, task).values
    with torch.inference_mode():
        out = loaded.model(**{k: torch.from_numpy(v) for k, v in data.inputs.items()}).last_hidden_state
        mask = torch.from_numpy(data.inputs["attention_mask"]).unsqueeze(-1).float()
        ref = torch.nn.functional.normalize((out * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    np.testing.assert_allclose(emb, ref, atol=1e-5)
    value = task.compute("spearman", emb, data)
    from scipy.stats import spearmanr

    cos = np.sum(emb[:40] * emb[40:], axis=1)  # the metric on these embeddings (ref's cosines tie-break apart)
    assert value == pytest.approx(spearmanr(data.examples["scores"], cos)[0], abs=1e-6)


def test_token_alignment_first_subtoken(tiny_task_models):
    from transformers import AutoConfig, AutoTokenizer

    folder = tiny_task_models["token-classification"]
    tok, cfg = AutoTokenizer.from_pretrained(folder), AutoConfig.from_pretrained(folder)
    task = task_for("token-classification", cfg)
    rows = {"tokens": [["alice", "xyzzy", "paris"]], "ner_tags": [["B-person", "O", 3]]}  # names and ids mix
    data = task.encode(rows, tok, task.columns(SimpleNamespace(text_columns=None, label_column="auto")),
                       key="data.evaluation", max_length=16, padding="max_length")
    assert data.labels == [["B-person", "O", "B-location"]]
    first = data.meta["first_subtoken_word"][0]
    assert [int(x) for x in first[first >= 0]] == [0, 1, 2]  # "xyzzy" is several word pieces, counted once
    logits = np.zeros((1, 16, 5), dtype=np.float32)
    for col in np.nonzero(first >= 0)[0]:
        logits[0, col, [1, 0, 3][first[col]]] = 1.0
    assert task.predict_batch({"logits": logits}, {}, data, 0) == [["B-person", "O", "B-location"]]
    targets = task.training_targets(data)
    assert sorted(set(targets[0].tolist())) == [-100, 0, 1, 3]


# --------------------------------------------------------------------------- end to end on tiny models
_spec, _write = task_spec, write_yaml


@pytest.fixture(scope="module")
def quantized(tiny_quantized):
    """Each task's tiny model quantized once (dynamic int8) through the Quantizer API (conftest)."""
    return tiny_quantized


EXPECTED_METRIC = {"token-classification": "f1", "feature-extraction": "spearman", "question-answering": "f1"}


@pytest.mark.parametrize("task", TASKS)
def test_quantize_every_task(quantized, task):
    import onnx

    from quantkit.graph import op_counts

    result = quantized[task]
    report = result.report
    assert report["model"]["task"] == task and report["task"]["name"] == task
    assert result.metric == EXPECTED_METRIC[task]
    assert np.isfinite(result.fp32.value) and np.isfinite(result.quantized.value)
    assert -1.0 <= result.quantized.value <= 1.0
    proto = onnx.load(str(result.model_path))
    assert [o.name for o in proto.graph.output] == list(get_task(task).output_names)
    ops = op_counts(proto)
    assert ops.get("MatMulInteger", 0) + ops.get("DynamicQuantizeMatMul", 0) + 2 * ops.get("QAttention", 0) >= 8
    assert report["evaluation"]["split"] == Path(report["evaluation"]["dataset"]).stem
    if task == "question-answering":
        assert report["evaluation"]["examples"] == 40 and report["evaluation"]["rows"] > 40  # long contexts split
    if task == "feature-extraction":
        assert (result.output_dir / "modules.json").is_file() and (result.output_dir / "1_Pooling/config.json").is_file()
        assert report["task"]["pooling"] == "mean" and report["task"]["normalize"] is True


@pytest.mark.parametrize("task", TASKS)
def test_dynamic_axes_at_three_shapes(quantized, task):
    import onnxruntime as ort

    session = ort.InferenceSession(str(quantized[task].model_path), providers=["CPUExecutionProvider"])
    for batch, seq in ((1, 7), (3, 16), (5, 40)):
        feeds = {i.name: np.ones((batch, seq), dtype=np.int64) * (5 if i.name == "input_ids" else 1)
                 for i in session.get_inputs()}
        feeds.get("token_type_ids", np.zeros(1))[...] = 0
        outs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
        if task == "token-classification":
            assert outs["logits"].shape == (batch, seq, 5)
        elif task == "feature-extraction":
            assert outs["last_hidden_state"].shape == (batch, seq, 32)
        else:
            assert outs["start_logits"].shape == outs["end_logits"].shape == (batch, seq)


@pytest.mark.optimum
@pytest.mark.parametrize("task", TASKS)
def test_artifact_loads_with_optimum_and_pipeline(quantized, task):
    import onnxruntime as ort
    import optimum.onnxruntime as ortm
    from transformers import AutoTokenizer, pipeline

    folder = quantized[task].output_dir
    cls = getattr(ortm, get_task(task).ort_model)
    model = cls.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    batch = tok(["alice is in paris", "who is bob ?"], padding=True, return_tensors="np")
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    direct = session.run(None, {i.name: batch[i.name] for i in session.get_inputs()})
    got = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")})
    np.testing.assert_allclose(np.asarray(got[get_task(task).output_names[0]]), direct[0], atol=1e-5)
    pipe = pipeline(get_task(task).pipeline_task, model=model, tokenizer=tok)
    if task == "question-answering":
        answer = pipe(question="where is alice ?", context="alice is in paris .")
        assert isinstance(answer["answer"], str) and 0 <= answer["start"] <= answer["end"]
    elif task == "token-classification":
        tagged = pipe("alice is in paris")
        assert all(t["entity"] in {"O", "B-person", "I-person", "B-location", "I-location"} for t in tagged)
    else:
        features = np.asarray(pipe("alice is in paris"))
        assert features.shape[-1] == 32


@pytest.mark.parametrize("task", TASKS)
def test_model_card_names_the_task(quantized, task):
    from quantkit.card import model_card_text

    card = model_card_text(quantized[task].report, "me/tiny")
    meta = card.split("---")[1]
    assert f"pipeline_tag: {get_task(task).pipeline_tag}" in meta
    assert get_task(task).ort_model in card and EXPECTED_METRIC[task] in meta
    assert "dataset_split" not in meta or "split: train" not in meta


@pytest.mark.parametrize("task", TASKS)
def test_check_is_clean_for_every_task(tiny_task_models, tiny_task_data, tmp_path, task):
    from quantkit.checks import run_checks
    from quantkit.specio import load_spec

    spec = load_spec(_write(tmp_path, _spec(task, tiny_task_models[task], tiny_task_data[task], tmp_path)))
    report = run_checks(spec)
    errors = [str(p) for p in report.problems if p.severity == "error"]
    internal = [str(p) for p in report.problems if "internal" in p.message]
    assert errors == [] and internal == []


def test_check_reports_broken_task_data(tiny_task_models, tiny_task_data, tmp_path):
    from quantkit.checks import run_checks
    from quantkit.specio import load_spec

    bad = tmp_path / "bad-ner.jsonl"
    bad.write_text(json.dumps({"tokens": ["alice", "x"], "ner_tags": ["B-person", "B-animal"]}) + "\n"
                   + json.dumps({"tokens": ["bob"], "ner_tags": ["O", "O"]}) + "\n")
    spec = load_spec(_write(tmp_path, _spec("token-classification", tiny_task_models["token-classification"], bad,
                                            tmp_path)))
    problems = {p.key_path: p.message for p in run_checks(spec).problems if p.severity == "error"}
    assert "B-animal" in problems["data.evaluation.label_column"]
    one_column = _spec("feature-extraction", tiny_task_models["feature-extraction"],
                       tiny_task_data["feature-extraction"], tmp_path)
    one_column["data"]["evaluation"]["text_columns"] = ["sentence1"]
    problems = {p.key_path: p.message for p in run_checks(load_spec(_write(tmp_path, one_column))).problems
                if p.severity == "error"}
    assert "needs two text columns" in problems["data.evaluation.text_columns"]


def test_spec_refuses_a_metric_of_another_task(tmp_path, tiny_task_models, tiny_task_data):
    from quantkit.errors import SpecError
    from quantkit.specio import load_spec

    spec = _spec("question-answering", tiny_task_models["question-answering"], tiny_task_data["question-answering"],
                 tmp_path, **{"evaluation.metric": "spearman"})
    with pytest.raises(SpecError, match=r"evaluation\.metric: 'spearman' is not a question-answering metric"):
        load_spec(_write(tmp_path, spec))
    spec = _spec("feature-extraction", tiny_task_models["feature-extraction"], tiny_task_data["feature-extraction"],
                 tmp_path, **{"quantization.approach": "qat", "quantization.backend": "neural-compressor",
                              "data.calibration": {"path": str(tiny_task_data["feature-extraction"])}})
    with pytest.raises(SpecError, match=r"quantization\.approach: qat is not available for feature-extraction"):
        load_spec(_write(tmp_path, spec))


def test_label_free_agreement_metric_per_task(quantized):
    """metric: agreement needs no labels; FP32 agrees with itself exactly."""
    for task, result in quantized.items():
        t = get_task(task)
        assert "agreement" in t.metrics and not t.metrics["agreement"].needs_labels
        obj = task_for(task, SimpleNamespace(id2label={i: x for i, x in enumerate(
            ["O", "B-person", "I-person", "B-location", "I-location"])}, num_labels=5))
        if task == "feature-extraction":
            emb = np.random.default_rng(0).normal(size=(4, 8))
            assert obj.agreement(emb, emb) == pytest.approx(1.0)
        elif task == "question-answering":
            assert obj.agreement(["The park", "x"], ["park", "y"]) == 0.5
        else:
            assert obj.agreement([["O", "B-person"]], [["O", "O"]]) == 0.5


def test_tune_token_classification(tiny_task_models, tiny_task_data, tmp_path):
    """The search runs on a tagger's entity F1 (not chunkable) and writes a loadable artifact."""
    from quantkit import Quantizer

    spec = _spec("token-classification", tiny_task_models["token-classification"],
                 tiny_task_data["token-classification"], tmp_path,
                 **{"tuning": {"strategy": "fastest", "tolerance": {"type": "absolute", "value": 1.0},
                               "space": {"op_types": [["MatMul"], ["MatMul", "Gather"]]}, "max_trials": 2,
                               "latency": {"batch_size": 2, "sequence_length": 16, "warmup": 1, "repeats": 3,
                                           "rounds": 2}}})
    result = Quantizer.from_pretrained(tiny_task_models["token-classification"]).tune(_write(tmp_path, spec),
                                                                                      progress=False)
    trials = result.tuning["trials"]
    assert [t["status"] for t in trials].count("ok") >= 1 and len(trials) == 2
    assert all(np.isfinite(t["metric"]) for t in trials if t["status"] == "ok")
    assert result.report["model"]["task"] == "token-classification" and result.metric == "f1"
    assert (result.output_dir / "model.onnx").is_file()


def test_benchmark_an_embedding_artifact(quantized):
    from quantkit.benchmark import benchmark

    res = benchmark([quantized["feature-extraction"].output_dir], batch_sizes=[1], sequence_lengths=[16],
                    warmup=1, repeats=3, rounds=3, include_fp32=False)
    rows = res.rows
    assert len(rows) == 1 and rows[0].p50_ms > 0


def test_text_classification_chance_score():
    """The best constant prediction: the majority share for accuracy, always-positive for binary f1."""
    import numpy as np

    from quantkit.data import TextDataset
    from quantkit.tasks import task_for

    data = TextDataset("d", {"input_ids": np.zeros((4, 2), dtype=np.int64)}, labels=np.array([0, 0, 0, 1]))
    task = task_for("text-classification")
    assert task.chance_score("accuracy", data) == pytest.approx(0.75)
    assert task.chance_score("f1", data) == pytest.approx(2 * 0.25 / 1.25)  # always 1: precision .25, recall 1
    assert task.chance_score("agreement", data) is None
    assert task.chance_score("accuracy", TextDataset("d", data.inputs, labels=None)) is None
