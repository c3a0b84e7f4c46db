"""quantkit.runtime: artifacts of every task run without optimum-onnx (tokenizer + ONNX Runtime + the task's
post-processing), checked against the graph run directly and against the pipeline conventions; on the
optimum stack (marker ``optimum``) against ``ORTModelFor*`` and ``transformers.pipeline`` (atol 1e-5)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from conftest import ALL_TASKS, WORDS

from quantkit.errors import ArtifactNotFoundError
from quantkit.runtime import Runtime, load
from quantkit.tasks import get_task
from quantkit.tasks.feature_extraction import pool
from quantkit.tasks.token_classification import group_entities

TEXTS = ["alice is in paris", "who is bob ? bob is in london with carol", "free money offer click now"]
QUESTIONS = ["where is alice ?", "where is bob ?"]
CONTEXTS = ["meeting project report . alice is in paris .",
            " ".join(["thanks regards hello"] * 30) + " . bob is in berlin ."]  # longer than one window at 64


def _direct(folder, feeds):
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    outs = session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})
    return dict(zip([o.name for o in session.get_outputs()], outs))


@pytest.fixture(scope="module")
def runtimes(tiny_quantized):
    return {task: load(str(tiny_quantized[task].output_dir), threads=1, max_length=64) for task in ALL_TASKS}


def test_load_reads_task_and_options(runtimes, tiny_quantized):
    for task, rt in runtimes.items():
        assert rt.task.name == task and rt.threads == 1 and rt.max_length == 64
        assert rt.output_names == list(get_task(task).output_names)
    fe = runtimes["feature-extraction"].task
    assert (fe.pooling, fe.normalize) == ("mean", True)  # from the artifact's sentence-transformers files
    assert runtimes["question-answering"].task._opt("doc_stride", None) == 16  # from quantkit_spec.yaml
    assert repr(runtimes["text-classification"]).startswith("Runtime(")


def test_load_errors(tmp_path):
    with pytest.raises(ArtifactNotFoundError, match="no model.onnx"):
        load(str(tmp_path))
    with pytest.raises(ArtifactNotFoundError, match="neither an existing folder nor a Hub repo id"):
        load("no such thing")


def test_text_classification_labels_and_scores(runtimes):
    rt = runtimes["text-classification"]
    enc = rt.tokenizer(TEXTS, padding=True, return_tensors="np")
    logits = _direct(rt.folder, dict(enc))["logits"]
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    got = rt(TEXTS, batch_size=3)  # the same batch (dynamic int8 scales depend on what is in it)
    assert [g["label"] for g in got] == [rt.config.id2label[int(i)] for i in probs.argmax(-1)]
    np.testing.assert_allclose([g["score"] for g in got], probs.max(-1), atol=1e-5)
    single = rt(TEXTS[0])
    assert single["label"] == got[0]["label"] and single["score"] == pytest.approx(got[0]["score"], abs=1e-3)
    assert [g["label"] for g in rt(TEXTS, batch_size=2)] == [g["label"] for g in got]
    every = rt(TEXTS[0], top_k=None)
    assert [e["label"] for e in every] == sorted(rt.config.id2label.values(), key=lambda lab: -probs[0][
        rt.config.label2id[lab]])
    assert sum(e["score"] for e in every) == pytest.approx(1.0, abs=1e-5)
    pairs = rt([("alice is in paris", "bob is in london"), {"text": "cash", "text_pair": "loan"}])
    assert len(pairs) == 2 and all(0 <= p["score"] <= 1 for p in pairs)
    with pytest.raises(TypeError, match="mixes single texts and text pairs"):
        rt(["one", ("two", "three")])


def test_feature_extraction_is_pooled_as_the_task_says(runtimes):
    rt = runtimes["feature-extraction"]
    enc = dict(rt.tokenizer(TEXTS, padding=True, return_tensors="np"))
    hidden = _direct(rt.folder, enc)["last_hidden_state"]
    expected = pool(hidden, enc["attention_mask"], "mean", True)
    got = rt(TEXTS, batch_size=3)
    assert got.shape == (3, 32)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # other batches pad differently (and dynamic int8 scales follow the batch): close, not identical
    assert np.min(np.sum(rt(TEXTS, batch_size=2) * expected, axis=1)) > 0.99
    assert float(rt(TEXTS[1]) @ expected[1]) > 0.99


def test_token_classification_spans_and_words(runtimes):
    rt = runtimes["token-classification"]
    text = TEXTS[1]
    entities = rt(text)
    enc = rt.tokenizer([text], return_offsets_mapping=True, return_special_tokens_mask=True, return_tensors="np")
    logits = _direct(rt.folder, {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")})["logits"][0]
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    tokens = []
    for j in range(enc["input_ids"].shape[1]):
        if enc["special_tokens_mask"][0, j]:
            continue
        start, end = (int(x) for x in enc["offset_mapping"][0, j])
        token_id = int(enc["input_ids"][0, j])
        unknown = token_id == rt.tokenizer.unk_token_id
        word = text[start:end] if unknown else rt.tokenizer.convert_ids_to_tokens(token_id)
        tokens.append({"entity": rt.config.id2label[int(probs[j].argmax())], "score": float(probs[j].max()),
                       "word": word, "start": start, "end": end})
    expected = group_entities(tokens, rt.tokenizer)
    assert [(e["entity_group"], e["start"], e["end"], e["word"]) for e in entities] == [
        (e["entity_group"], e["start"], e["end"], e["word"]) for e in expected]
    for e in entities:  # the word is the tokens joined as transformers joins them (a group may start mid-word)
        assert e["entity_group"] in {"person", "location"}
        assert text[e["start"]:e["end"]].replace(" ", "") == e["word"].replace(" ", "").replace("##", "")
    batched = rt([TEXTS[0], text, TEXTS[2]], batch_size=1)  # same one-row batch: identical
    assert batched[1] == entities
    words = rt(words=["alice", "is", "in", "paris"])
    assert [w["word"] for w in words] == ["alice", "is", "in", "paris"]
    assert all(w["entity"] in set(rt.config.id2label.values()) and 0 < w["score"] <= 1 for w in words)
    assert rt(words=[["alice", "is", "in", "paris"], ["bob"]], batch_size=1)[0] == words


def test_group_entities_follows_the_simple_strategy():
    class Tok:
        @staticmethod
        def convert_tokens_to_string(tokens):
            return " ".join(tokens).replace(" ##", "")

    def tok(entity, word, start, score=0.9):
        return {"entity": entity, "score": score, "word": word, "start": start,
                "end": start + len(word.removeprefix("##"))}

    tokens = [tok("B-PER", "ada", 0), tok("I-PER", "love", 4, 0.7), tok("I-PER", "##lace", 8, 0.8),
              tok("O", "visited", 13), tok("B-LOC", "london", 21), tok("B-LOC", "paris", 28), tok("I-PER", "bob", 34)]
    groups = group_entities(tokens, Tok())
    assert [(g["entity_group"], g["word"], g["start"], g["end"]) for g in groups] == [
        ("PER", "ada lovelace", 0, 12), ("LOC", "london", 21, 27), ("LOC", "paris", 28, 33), ("PER", "bob", 34, 37)]
    assert groups[0]["score"] == pytest.approx((0.9 + 0.7 + 0.8) / 3)


def test_question_answering_spans_across_windows(runtimes):
    rt = runtimes["question-answering"]
    answers = rt(question=QUESTIONS, context=CONTEXTS, batch_size=1)
    assert len(answers) == 2
    for a, context in zip(answers, CONTEXTS):
        assert set(a) == {"answer", "score", "start", "end"} and 0 <= a["score"] <= 1
        assert context[a["start"]:a["end"]] == a["answer"] and a["answer"]
    enc = rt.tokenizer(QUESTIONS[1], CONTEXTS[1], truncation="only_second", max_length=64, stride=16,
                       return_overflowing_tokens=True)
    assert len(enc["input_ids"]) > 1  # the second context really spans several windows
    one = rt(question=QUESTIONS[0], context=CONTEXTS[0])
    assert one == answers[0]
    assert rt([{"question": q, "context": c} for q, c in zip(QUESTIONS, CONTEXTS)], batch_size=1) == answers
    with pytest.raises(TypeError, match="same length"):
        rt(question=QUESTIONS, context=CONTEXTS[0])


def test_threads_and_bad_batch_size(tiny_quantized):
    rt = Runtime(tiny_quantized["text-classification"].output_dir, threads=2)
    assert rt.session.get_session_options().intra_op_num_threads == 2
    with pytest.raises(ValueError, match="batch_size"):
        rt(TEXTS, batch_size=0)


# --------------------------------------------------------------------------- the optimum stack
@pytest.mark.optimum
@pytest.mark.parametrize("task", ALL_TASKS)
def test_runtime_reproduces_ortmodel(runtimes, task):
    """The runtime's outputs == optimum's ORTModelFor* outputs on the same batch (atol 1e-5), and its
    post-processed results == transformers.pipeline's with that ORTModel (which runs one example at a time:
    so does the runtime here, ``batch_size=1``, as dynamic int8 depends on what shares the batch)."""
    import optimum.onnxruntime as ortm
    from transformers import pipeline

    rt = runtimes[task]
    model = getattr(ortm, get_task(task).ort_model).from_pretrained(rt.folder)
    enc = rt.tokenizer(TEXTS, padding=True, return_tensors="np")
    feeds = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
    ours = rt.run(feeds)
    theirs = model(**feeds)
    for name in get_task(task).output_names:
        np.testing.assert_allclose(ours[name], np.asarray(theirs[name]), atol=1e-5)
    pipe = pipeline(get_task(task).pipeline_task, model=model, tokenizer=rt.tokenizer)
    if task == "text-classification":
        for got, want in zip(rt(TEXTS, batch_size=1), pipe(TEXTS)):
            assert got["label"] == want["label"] and got["score"] == pytest.approx(want["score"], abs=1e-5)
    elif task == "token-classification":
        pipe = pipeline("token-classification", model=model, tokenizer=rt.tokenizer, aggregation_strategy="simple")
        for got, want in zip(rt(TEXTS, batch_size=1), pipe(TEXTS)):
            assert [(g["entity_group"], g["start"], g["end"], g["word"]) for g in got] == [
                (w["entity_group"], w["start"], w["end"], w["word"]) for w in want]
            np.testing.assert_allclose([g["score"] for g in got], [w["score"] for w in want], atol=1e-5)
    elif task == "feature-extraction":
        for text, got in zip(TEXTS, rt(TEXTS, batch_size=1)):
            tokens = np.asarray(pipe(text))[0]
            mean = tokens.mean(0)
            np.testing.assert_allclose(got, mean / np.linalg.norm(mean), atol=1e-5)
    else:
        # One window, and a context of distinct words over several overlapping windows.
        long_context = " ".join(WORDS) + " . carol is in berlin ."
        short = load(str(rt.folder), threads=1, max_length=32)  # windows of 32 tokens, 16 of overlap
        windows = rt.tokenizer("where is carol ?", long_context, truncation="only_second", max_length=32, stride=16,
                               return_overflowing_tokens=True)["input_ids"]
        assert len(windows) >= 3
        for q, c in ((QUESTIONS[0], CONTEXTS[0]), ("where is carol ?", long_context)):
            got = short(question=q, context=c, batch_size=1)
            want = pipe(question=q, context=c, max_answer_len=30, doc_stride=16, max_seq_len=32)
            assert (got["answer"], got["start"], got["end"]) == (want["answer"], want["start"], want["end"])
            assert got["score"] == pytest.approx(want["score"], abs=1e-5)


def test_precision_fp32_runs_the_artifacts_baseline(runtimes, tmp_path):
    """load(folder, precision="fp32") serves fp32/model.onnx with the same tokenizer and post-processing; a folder
    without the baseline says how to keep it."""
    import shutil

    int8 = runtimes["text-classification"]
    folder = tmp_path / "artifact"
    shutil.copytree(int8.folder, folder)
    with pytest.raises(ArtifactNotFoundError, match=r"no FP32 baseline \(fp32/model.onnx\)") as info:
        load(str(folder), precision="fp32")
    assert "output.keep_fp32" in info.value.hint
    with pytest.raises(ValueError, match="precision: 'fp16' is not one of int8, fp32"):
        load(str(folder), precision="fp16")
    (folder / "fp32").mkdir()
    shutil.copy(folder / "model.onnx", folder / "fp32" / "model.onnx")  # stands in for the baseline graph
    (folder / "model.onnx").write_bytes(b"not a graph")  # proves the int8 file is not the one loaded
    fp32 = load(str(folder), precision="fp32", threads=1, max_length=64)
    assert fp32.model_path == folder / "fp32" / "model.onnx"
    assert fp32(TEXTS, batch_size=3) == int8(TEXTS, batch_size=3)
