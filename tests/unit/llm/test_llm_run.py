"""A causal LM end to end on a tiny model (quantize, report, artifact, generation), and the inputs `check` refuses."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from quantkit.cli import app
from tiny_decoders import llm_spec

runner = CliRunner()


def _spec(model, text, out, **quantization):
    return llm_spec(model, text, out, **quantization)


@pytest.fixture(scope="module")
def llama_run(decoder_dirs, text_file, tmp_path_factory):
    from quantkit import Quantizer
    from quantkit.specio import parse_spec

    out = tmp_path_factory.mktemp("llm-run") / "int4"
    spec = parse_spec(_spec(decoder_dirs["llama"], text_file, out, weight_only={"bits": 4, "block_size": 32}))
    return Quantizer.from_pretrained(str(decoder_dirs["llama"])).quantize(spec, progress=False)


def test_a_weight_only_run_reports_perplexity_kl_and_top1_as_lower_and_higher_is_better(llama_run):
    report = llama_run.report
    assert report["evaluation"]["metric"] == "perplexity" and report["evaluation"]["higher_is_better"] is False
    fp32, q = llama_run.fp32.value, llama_run.quantized.value
    assert fp32 > 1 and q > 1
    assert llama_run.relative_drop == pytest.approx((q - fp32) / fp32)
    scores = report["result"]["scores"]
    assert scores["fp32"]["kl_divergence"] == pytest.approx(0.0, abs=1e-7) and scores["fp32"]["top1_agreement"] == 1
    assert 0 < scores["quantized"]["kl_divergence"] < 1 and 0.5 < scores["quantized"]["top1_agreement"] <= 1
    assert scores["quantized"]["perplexity"] == pytest.approx(q)
    rows = report["evaluation"]["rows"]
    assert scores["quantized"]["scored_tokens"] == scores["fp32"]["scored_tokens"]
    assert (rows - 1) * 31 < scores["quantized"]["scored_tokens"] <= rows * 31  # the last window may be short
    assert report["quantization"]["weight_only"]["linear_layers"] == 14
    assert report["quantization"]["graph"]["ops"]["MatMulNBits"] == 15
    assert llama_run.size_ratio < 0.6
    rows = {r[0]: r for r in llama_run.summary_rows()}
    assert rows["perplexity"][3] == f"{(q - fp32) / fp32:+.2%}" and "kl_divergence vs FP32" in rows


def test_the_artifact_generates_what_transformers_generates_greedily(llama_run, llama_loaded):
    import torch

    from quantkit.runtime import load

    folder = llama_run.output_dir
    assert {"model.onnx", "config.json", "tokenizer.json", "fp32"} <= {p.name for p in folder.iterdir()}
    eos = llama_loaded.tokenizer.eos_token_id

    def greedy(prompt):
        ids = llama_loaded.tokenizer(prompt, add_special_tokens=False)["input_ids"]  # no BERT [SEP] (= EOS here)
        with torch.no_grad():
            out = llama_loaded.model.generate(torch.tensor([ids]), attention_mask=torch.ones((1, len(ids)),
                                              dtype=torch.long), max_new_tokens=12, do_sample=False,
                                              eos_token_id=None, pad_token_id=0)
        return ids, out[0, len(ids):].tolist()

    # a prompt whose greedy continuation (random weights) runs a while before the end-of-sequence token
    prompts = [" ".join(w) for w in (("the", "whale"), ("old", "man", "sea"), ("storm", "night"), ("captain",),
                                     ("sail", "wind", "boat"), ("deep", "water", "was"))]
    prompt, ids, expected = max(((p, *greedy(p)) for p in prompts),
                                key=lambda t: t[2].index(eos) if eos in t[2] else 99)
    cut = expected.index(eos) if eos in expected else len(expected)
    assert cut >= 2, "no prompt continues for two tokens: regenerate the tiny model"
    fp32 = load(folder, precision="fp32")
    got = fp32.generate(ids, max_new_tokens=12, details=True)
    assert got.token_ids == expected[:cut]
    assert got.stopped_by == ("eos" if cut < 12 else "length")
    assert got.prompt_tokens == len(ids) and got.prefill_s > 0
    int4 = load(folder)
    text = int4.generate(prompt, max_new_tokens=8)
    assert "".join(int4.stream(prompt, max_new_tokens=8)) == text
    sampled = [int4.generate(prompt, max_new_tokens=8, do_sample=True, seed=3, temperature=1.5) for _ in range(2)]
    assert sampled[0] == sampled[1]
    assert int4(prompt, max_new_tokens=4) == [{"generated_text": prompt + int4.generate(prompt, max_new_tokens=4)}]
    stop_word = text.split()[0] if text.split() else None
    if stop_word:
        assert stop_word not in int4.generate(prompt, max_new_tokens=8, stop=[stop_word])


def test_sampling_respects_top_k_and_top_p():
    from quantkit.generation import GenerationConfig, next_token

    logits = np.array([5.0, 4.0, 3.0, -10.0, -10.0])
    rng = np.random.default_rng(0)
    drawn = {next_token(logits, GenerationConfig(do_sample=True, top_k=2), rng) for _ in range(200)}
    assert drawn == {0, 1}
    drawn = {next_token(logits, GenerationConfig(do_sample=True, top_k=0, top_p=0.5), rng) for _ in range(50)}
    assert drawn == {0}
    assert next_token(logits, GenerationConfig(), rng) == 0
    with pytest.raises(ValueError, match="temperature"):
        GenerationConfig(do_sample=True, temperature=0)


def _check(tmp_path, spec) -> dict:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    started = time.perf_counter()
    result = runner.invoke(app, ["check", "--config", str(path), "--json"])
    assert time.perf_counter() - started < 60
    assert result.exit_code == 2, result.output
    return {p["key_path"]: p["message"] for p in json.loads(result.output)["problems"] if p["severity"] == "error"}


@pytest.mark.parametrize("content,key,message", [
    ("", "data.evaluation.path", "no rows|empty"),
    (b"\x00\x01\x02\xff\xfe" * 2000, "data.evaluation.path", "cannot parse|does not look like text"),
    ("the whale.", "data.evaluation", "shorter than one window"),
])
def test_check_refuses_texts_that_cannot_be_scored(content, key, message, decoder_dirs, tmp_path):
    import re

    text = tmp_path / "bad.txt"
    text.write_bytes(content if isinstance(content, bytes) else content.encode())
    errors = _check(tmp_path, _spec(decoder_dirs["llama"], text, tmp_path / "out"))
    hits = [m for k, m in errors.items() if k.startswith(key) and re.search(message, m)]
    assert hits, errors
    assert not (tmp_path / "out").exists()


def test_check_refuses_a_context_longer_than_the_positions(decoder_dirs, text_file, tmp_path):
    spec = _spec(decoder_dirs["gpt2"], text_file, tmp_path / "out")  # absolute positions: 128
    spec["data"]["max_length"] = 256
    errors = _check(tmp_path, spec)
    assert "exceeds the model's max_position_embeddings 128" in errors["data.max_length"]


def test_check_refuses_a_model_without_a_causal_lm_head_and_encoder_specs_asking_for_perplexity(
        decoder_dirs, text_file, tiny_model_dir, tmp_path):
    import shutil

    import transformers

    base = tmp_path / "llama-base"
    shutil.copytree(decoder_dirs["llama"], base)
    config = json.loads((base / "config.json").read_text())
    config["architectures"] = ["LlamaModel"]
    (base / "config.json").write_text(json.dumps(config))
    errors = _check(tmp_path, _spec(base, text_file, tmp_path / "out"))
    assert "head is not in the weights" in errors["model.task"]
    assert transformers.__version__  # the refusal names the checkpoint's architecture
    assert "LlamaModel" in errors["model.task"]
    encoder = {"spec_version": 1, "model": {"name_or_path": str(tiny_model_dir)},
               "data": {"evaluation": {"path": str(text_file)}}, "evaluation": {"metric": "perplexity"}}
    errors = _check(tmp_path, encoder)
    assert "not a text-classification metric" in errors["evaluation.metric"]


def test_a_gguf_transformers_cannot_read_is_a_clear_error(tmp_path, text_file):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"GGUF" + b"\x00" * 64)
    result = runner.invoke(app, ["quantize", "--model", str(fake), "--config", str(_write(tmp_path, text_file)),
                                 "--output", str(tmp_path / "out")])
    assert result.exit_code == 2 and "cannot read this GGUF file" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def _write(tmp_path, text_file):
    path = tmp_path / "g.yaml"
    spec = _spec("unused", text_file, tmp_path / "out")
    del spec["model"]["name_or_path"]
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def test_cli_generate_streams_the_runtimes_text_and_reports_speed(llama_run):
    from quantkit.runtime import load

    prompt = "the old man and the sea"
    expected = load(llama_run.output_dir).generate(prompt, max_new_tokens=6)
    result = runner.invoke(app, ["generate", str(llama_run.output_dir), prompt, "-n", "6"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(expected) and "prompt tokens" in result.stderr and "stopped by" in result.stderr
    missing = runner.invoke(app, ["generate", str(llama_run.output_dir / "nope"), prompt])
    assert missing.exit_code != 0 and "Traceback" not in missing.output


def test_tune_searches_weight_only_settings_within_a_relative_perplexity_tolerance(decoder_dirs, text_file, tmp_path):
    from quantkit import Quantizer
    from quantkit.specio import parse_spec

    raw = _spec(decoder_dirs["llama"], text_file, tmp_path / "tuned", weight_only={"bits": 4})
    raw["data"]["evaluation"]["limit"] = 6
    raw["evaluation"]["latency"]["new_tokens"] = 2
    raw["tuning"] = {"strategy": "fastest", "objective": "size", "tolerance": {"type": "relative", "value": 0.02},
                     "space": {"weight_only.bits": [4, 8], "weight_only.block_size": [32, 64]},
                     "latency": {"batch_size": 1, "sequence_length": 16, "rounds": 1, "warmup": 1, "repeats": 3}}
    result = Quantizer.from_pretrained(str(decoder_dirs["llama"])).tune(parse_spec(raw), progress=False)
    tuning = result.report["tuning"]
    settings = [t["config"].split("approach=weight_only ")[1] for t in tuning["trials"]]
    assert sorted(settings) == sorted(f"int{b} rtn block={s}" for b in (4, 8) for s in (32, 64))  # each once
    assert tuning["within_tolerance"]
    passing = [t for t in tuning["trials"] if t["passed"]]
    assert all(t["metric"] <= result.fp32.value * 1.02 + 1e-9 for t in passing)  # perplexity: lower is better
    assert result.quantized.value <= result.fp32.value * 1.02 + 1e-9
    chosen = tuning["trials"][tuning["chosen_trial"]]
    assert "int4" in chosen["config"]  # objective size: the 4-bit candidates are smaller
    assert result.report["quantization"]["config"]["weight_only"]["bits"] == 4
