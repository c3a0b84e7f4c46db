"""Pushing artifact folders to the Hub and loading them back, against the local Hub server in
tests/hubserver.py (HF_ENDPOINT points at it): model card, retries, auth errors, idempotency, no token leaks."""

from __future__ import annotations

import json
import logging
import secrets
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import write_spec
from hubserver import HubServer, git_sha1, reset_hub_sessions
from typer.testing import CliRunner

from quantkit import Quantizer
from quantkit.card import model_card_text, validate_model_card
from quantkit.cli import app
from quantkit.errors import (
    ArtifactNotFoundError,
    HubAuthError,
    HubError,
    HubNotFoundError,
    HubRepoIdError,
)
from quantkit.hub import PUSH_EXCLUDE, SCRUBBED_FILES, RetryPolicy, base_model_license, push_artifact, resolve_artifact
from quantkit.quantizer import QuantizationResult

TOKEN = f"hf_quantkitTEST{secrets.token_hex(12)}"
REPO = "quantkit-tests/spam-int8"
AUTO_REPO = "quantkit-tests/auto-pushed"
TEXTS = ["free money offer click now winner", "meeting tomorrow about the project report", "cheap loan credit deal"]
runner = CliRunner()


def no_wait(delays: list[float]) -> RetryPolicy:
    """A retry policy that records its waits instead of sleeping."""
    return RetryPolicy(attempts=3, initial_delay=0.5, max_delay=4.0, sleep=delays.append)


def folder_state(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder`` with its bytes and mtime (to prove a push did not touch it)."""
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory):
    """The local Hub, with HF_ENDPOINT/HF_TOKEN and huggingface_hub's import-time constants pointed at it
    and offline mode off (conftest turns it on for every other test)."""
    import transformers.utils.hub as transformers_hub
    from huggingface_hub import constants, file_download

    server = HubServer(token=TOKEN).start()
    template = server.url + "/{repo_id}/resolve/{revision}/{filename}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_ENDPOINT", server.url)
        mp.setenv("HF_TOKEN", TOKEN)
        mp.setattr(constants, "ENDPOINT", server.url)
        mp.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        mp.setattr(file_download, "HUGGINGFACE_CO_URL_TEMPLATE", template, raising=False)  # hub 0.x
        mp.setattr(constants, "HF_HUB_OFFLINE", False)
        mp.setattr(constants, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("hub-cache")))
        mp.setattr(constants, "HF_TOKEN_PATH", str(tmp_path_factory.mktemp("no-login") / "token"))
        mp.setattr(transformers_hub, "_is_offline_mode", False, raising=False)  # transformers 4.57
        reset_hub_sessions()  # sessions made while offline refuse every request
        yield server
    reset_hub_sessions()
    server.stop()


@pytest.fixture(autouse=True)
def fresh_hub(hub: HubServer) -> HubServer:
    hub.reset()
    return hub


@pytest.fixture(scope="module")
def base_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a README whose metadata carries a license (for the card to pick up)."""
    path = tmp_path_factory.mktemp("base") / "tiny-bert"
    shutil.copytree(tiny_model_dir, path)
    (path / "README.md").write_text("---\nlicense: apache-2.0\nlanguage: en\n---\n# tiny bert\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def auto_pushed(hub: HubServer, base_model_dir: Path, tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """Quantize once with ``hub: {push: true}``: the result and what the Hub then held."""
    hub.reset()
    root = tmp_path_factory.mktemp("hub-quantize")
    spec = write_spec(root / "spec.yaml", f"""
spec_version: 1
model: {{name_or_path: {base_model_dir}}}
quantization: {{approach: dynamic}}
data:
  evaluation: {{path: {tiny_data_dir / 'validation.jsonl'}}}
  max_length: 32
evaluation:
  metric: accuracy
  latency: {{batch_size: 2, sequence_length: 16, warmup: 1, repeats: 3, rounds: 1}}
output: {{dir: artifacts}}
hub: {{repo_id: {AUTO_REPO}, push: true, commit_message: first int8 model}}
""")
    result = Quantizer.from_pretrained(base_model_dir).quantize(spec, progress=False)
    return result, hub.files(AUTO_REPO), hub.commits(AUTO_REPO)


@pytest.fixture
def artifact(auto_pushed) -> Path:
    return auto_pushed[0].output_dir


# --------------------------------------------------------------------------- push from a spec, load back
def test_spec_hub_push_after_quantize(auto_pushed):
    result, remote, commits = auto_pushed
    assert result.push is not None and result.push.repo_id == AUTO_REPO and not result.push.up_to_date
    assert commits == 1
    local = {rel: data for rel, (data, _) in folder_state(result.output_dir).items()}
    assert set(remote) == set(local) | {"README.md", ".gitattributes"}
    for rel, data in local.items():
        if rel in SCRUBBED_FILES:  # local paths of this machine stay here; the pushed copy names base names
            where = str(result.output_dir.parent).encode()
            assert where in data and where not in remote[rel], rel
            assert b"/spec.yaml" not in remote[rel] and b"validation.jsonl" in remote[rel]
        else:
            assert remote[rel] == data, rel
    spec = yaml.safe_load(remote["quantkit_spec.yaml"])
    assert spec["model"]["name_or_path"] == "tiny-bert" and spec["data"]["evaluation"]["path"] == "validation.jsonl"
    report = json.loads(remote["quantkit_report.json"])
    assert report["model"]["name_or_path"] == "tiny-bert" and report["quantized"]["value"] == result.quantized.value
    assert set(result.push.uploaded) == set(local) | {"README.md"}
    assert result.push.commit_url.endswith(f"/{AUTO_REPO}/commit/{result.push.commit_oid}")
    assert remote["README.md"].decode().startswith("---\n")


def test_push_then_runtime_load_by_repo_id(hub, artifact, tmp_path):
    """Without optimum-onnx: quantkit.runtime.load(repo_id) downloads the pushed folder and gives the local
    folder's logits and labels."""
    from quantkit.runtime import load

    pushed = push_artifact(artifact, REPO)
    assert "model.onnx" in pushed.uploaded or pushed.up_to_date
    remote = load(REPO, cache_dir=tmp_path / "cache", threads=1)
    local = load(str(artifact), threads=1)
    assert remote.folder != local.folder and remote.folder.is_relative_to(tmp_path / "cache")
    enc = dict(remote.tokenizer(TEXTS, padding=True, return_tensors="np"))
    remote_logits = remote.run(enc)["logits"]
    np.testing.assert_array_equal(remote_logits, local.run(enc)["logits"])
    assert remote_logits.shape == (3, 2)
    assert [p["label"] for p in remote(TEXTS, batch_size=3)] == [
        remote.config.id2label[int(i)] for i in remote_logits.argmax(-1)]
    downloads = hub.calls("GET", f"/{REPO}/resolve/")
    assert {d.path.rsplit("/", 1)[1] for d in downloads} >= {"model.onnx", "config.json", "tokenizer.json"}


@pytest.mark.optimum
def test_push_then_load_back_gives_the_same_logits(hub, artifact, tmp_path):
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer, pipeline

    pushed = push_artifact(artifact, REPO)
    assert not pushed.up_to_date and "model.onnx" in pushed.uploaded
    cache = tmp_path / "cache"
    remote_model = ORTModelForSequenceClassification.from_pretrained(REPO, cache_dir=cache)
    local_model = ORTModelForSequenceClassification.from_pretrained(artifact)
    tokenizer = AutoTokenizer.from_pretrained(REPO, cache_dir=cache)
    enc = dict(tokenizer(TEXTS, padding=True, return_tensors="np"))
    remote_logits = np.asarray(remote_model(**enc).logits)
    np.testing.assert_array_equal(remote_logits, np.asarray(local_model(**enc).logits))
    assert remote_logits.shape == (3, 2)
    clf = pipeline("text-classification", model=remote_model, tokenizer=tokenizer)
    assert [p["label"] for p in clf(TEXTS)] == [remote_model.config.id2label[int(i)] for i in remote_logits.argmax(-1)]
    downloads = hub.calls("GET", f"/{REPO}/resolve/")
    assert {d.path.rsplit("/", 1)[1] for d in downloads} >= {"model.onnx", "config.json", "tokenizer.json"}
    assert all(d.status == 200 for d in downloads)


def test_resolve_artifact_and_load_quantized_from_the_hub(hub, artifact, tmp_path, auto_pushed):
    push_artifact(artifact, REPO)
    folder = resolve_artifact(REPO, cache_dir=tmp_path / "cache")
    assert folder != artifact and folder.is_relative_to(tmp_path / "cache")
    assert (folder / "model.onnx").read_bytes() == (artifact / "model.onnx").read_bytes()
    assert "trials.db" not in {p.name for p in folder.iterdir()}
    loaded = Quantizer.load_quantized(REPO)
    local = auto_pushed[0]
    assert isinstance(loaded, QuantizationResult)
    assert loaded.quantized.value == local.quantized.value and loaded.fp32.value == local.fp32.value
    assert loaded.size_ratio == pytest.approx(local.size_ratio)
    assert loaded.latency_ratio == pytest.approx(local.latency_ratio)
    assert loaded.model_path.read_bytes() == local.model_path.read_bytes()
    # a local folder resolves to itself without touching the Hub
    before = len(hub.requests)
    assert resolve_artifact(str(artifact)) == artifact
    assert len(hub.requests) == before


def test_resolve_artifact_errors(hub, tmp_path, artifact):
    with pytest.raises(HubNotFoundError, match="quantkit-tests/missing") as info:
        resolve_artifact("quantkit-tests/missing", cache_dir=tmp_path)
    assert info.value.exit_code == 2 and "revision" in info.value.hint
    push_artifact(artifact, REPO)
    with pytest.raises(HubNotFoundError, match="revision 'v9' of quantkit-tests/spam-int8"):
        resolve_artifact(REPO, revision="v9", cache_dir=tmp_path)
    with pytest.raises(ArtifactNotFoundError, match="neither an existing folder nor a Hub repo id"):
        resolve_artifact("./no/such/folder")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactNotFoundError, match="no model.onnx") as info:
        resolve_artifact(tmp_path / "empty")
    assert info.value.exit_code == 2
    hub.add_repo("quantkit-tests/not-onnx", {"config.json": b"{}"})
    with pytest.raises(ArtifactNotFoundError, match="has no model.onnx"):
        resolve_artifact("quantkit-tests/not-onnx", cache_dir=tmp_path)


# --------------------------------------------------------------------------- idempotency
def test_pushing_the_same_folder_twice_makes_no_second_commit(hub, artifact, tmp_path):
    first = push_artifact(artifact, REPO)
    assert hub.commits(REPO) == 1 and len(first.uploaded) > 5
    second = push_artifact(artifact, REPO)
    assert second.up_to_date and second.uploaded == () and second.commit_url is None
    assert hub.commits(REPO) == 1
    assert len(hub.calls("POST", "/preupload/")) == 1  # the second push uploaded nothing at all
    # one changed file: only that file is committed
    copy = tmp_path / "copy"
    shutil.copytree(artifact, copy)
    edited = yaml.safe_load((copy / "quantkit_spec.yaml").read_text())
    edited["evaluation"]["batch_size"] = 7
    (copy / "quantkit_spec.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
    third = push_artifact(copy, REPO, commit_message="edit the spec")
    assert third.uploaded == ("quantkit_spec.yaml",) and hub.commits(REPO) == 2
    assert yaml.safe_load(hub.files(REPO)["quantkit_spec.yaml"])["evaluation"]["batch_size"] == 7


def test_the_fp32_baseline_is_pushed_only_when_asked(hub, artifact, tmp_path):
    copy = tmp_path / "with-fp32"
    shutil.copytree(artifact, copy)
    (copy / "fp32").mkdir()
    (copy / "fp32" / "model.onnx").write_bytes(b"fp32 graph")
    first = push_artifact(copy, REPO)
    assert "fp32/model.onnx" not in first.uploaded and "fp32/model.onnx" not in hub.files(REPO)
    runner = CliRunner()
    out = runner.invoke(app, ["push", str(copy), "--repo-id", REPO, "--include-fp32"])
    assert out.exit_code == 0, out.output
    assert hub.files(REPO)["fp32/model.onnx"] == b"fp32 graph" and hub.commits(REPO) == 2


def test_push_never_modifies_the_folder_and_replaces_a_local_readme(hub, artifact, tmp_path):
    copy = tmp_path / "with-readme"
    shutil.copytree(artifact, copy)
    (copy / "README.md").write_text("my own notes\n", encoding="utf-8")
    (copy / "trials.db").write_bytes(b"resume state")
    before = folder_state(copy)
    push_artifact(copy, REPO)
    assert folder_state(copy) == before
    remote = hub.files(REPO)
    assert "trials.db" in PUSH_EXCLUDE and "trials.db" not in remote
    card = remote["README.md"].decode()
    assert "my own notes" not in card and "model-index" in card


# --------------------------------------------------------------------------- retries and errors
def test_5xx_and_dropped_connections_are_retried(hub, artifact):
    hub.fail(500, times=2, method="POST", path_contains="/commit/")
    hub.fail(None, times=1, path_contains="/api/repos/create")  # connection dropped without an answer
    delays: list[float] = []
    result = push_artifact(artifact, REPO, retry=no_wait(delays))
    assert not result.up_to_date and hub.commits(REPO) == 1
    assert delays == [0.5, 0.5, 1.0]  # create: 1 retry; commit: 2 retries with backoff
    commits = hub.calls("POST", "/commit/")
    assert [c.status for c in commits] == [500, 500, 200]
    creates = hub.calls("POST", "/api/repos/create")
    assert [c.status for c in creates] == [None, 200]
    assert hub.files(REPO)["model.onnx"] == (artifact / "model.onnx").read_bytes()


def test_5xx_that_persists_fails_after_the_attempts(hub, artifact, monkeypatch):
    import functools

    import huggingface_hub._commit_api as commit_api

    if hasattr(commit_api, "http_backoff"):  # huggingface_hub >= 1 also retries a 5xx preupload itself (5 times,
        # sleeping up to 23 s): off here, so the count below is quantkit's own attempts
        monkeypatch.setattr(commit_api, "http_backoff", functools.partial(commit_api.http_backoff, max_retries=0))
    hub.fail(503, method="POST", path_contains="/preupload/")
    delays: list[float] = []
    before = folder_state(artifact)
    with pytest.raises(HubError) as info:
        push_artifact(artifact, REPO, retry=no_wait(delays))
    err = info.value
    assert type(err) is HubError and err.exit_code == 1 and err.status == 503
    assert "HTTP 503" in str(err) and REPO in str(err) and "after 3 attempts" in str(err)
    assert delays == [0.5, 1.0] and len(hub.calls("POST", "/preupload/")) == 3
    assert hub.commits(REPO) == 0 and folder_state(artifact) == before


@pytest.mark.parametrize(("status", "fragment"), [(401, "rejected the credentials"), (403, "no permission")])
def test_auth_errors_are_clear_not_retried_and_leave_the_folder(hub, artifact, status, fragment):
    hub.fail(status)
    before = folder_state(artifact)
    delays: list[float] = []
    with pytest.raises(HubAuthError) as info:
        push_artifact(artifact, REPO, retry=no_wait(delays))
    err = info.value
    assert err.exit_code == 2 and err.status == status and err.repo_id == REPO
    assert fragment in str(err) and REPO in str(err) and f"HTTP {status}" in str(err)
    assert "HF_TOKEN" in err.hint and "hf auth login" in err.hint and "write" in err.hint
    assert delays == [] and len(hub.calls("POST", "/api/repos/create")) == 1  # 4xx is never retried
    assert hub.calls("POST", "/preupload/") == [] and hub.commits(REPO) == 0
    assert folder_state(artifact) == before
    assert TOKEN not in str(err) + err.hint


def test_cli_push_permanent_401_exit_2_without_traceback(hub, artifact):
    hub.fail(401)
    before = folder_state(artifact)
    result = runner.invoke(app, ["push", str(artifact), "--repo-id", REPO])
    assert result.exit_code == 2, result.output
    assert "Hugging Face Hub authentication failed" in result.output and REPO in result.output
    assert "HF_TOKEN" in result.output and "Traceback" not in result.output
    assert TOKEN not in result.output
    assert folder_state(artifact) == before


def test_no_token_is_an_auth_error_before_any_request(hub, artifact, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubAuthError, match="no Hugging Face token found") as info:
        push_artifact(artifact, REPO)
    assert info.value.exit_code == 2 and "hf auth login" in info.value.hint
    assert hub.requests == []


def test_bad_input_errors(tmp_path, hub):
    with pytest.raises(HubRepoIdError, match="not a Hub repo id") as info:
        push_artifact(tmp_path, "no-owner")
    assert info.value.exit_code == 2
    with pytest.raises(ArtifactNotFoundError, match="not a quantkit artifact folder") as info:
        push_artifact(tmp_path, REPO)
    assert info.value.exit_code == 2
    result = runner.invoke(app, ["push", str(tmp_path), "--repo-id", "bad--id/x"])
    assert result.exit_code == 2 and "invalid Hub repo id" in result.output and "Traceback" not in result.output
    assert hub.requests == []


# --------------------------------------------------------------------------- branches, PRs, CLI
def test_revision_branch_and_pull_request(hub, artifact):
    on_branch = push_artifact(artifact, REPO, revision="int8-v2")
    assert on_branch.revision == "int8-v2" and not on_branch.up_to_date
    assert "model.onnx" in hub.files(REPO, "int8-v2") and "model.onnx" not in hub.files(REPO, "main")
    assert push_artifact(artifact, REPO, revision="int8-v2").up_to_date
    pr = push_artifact(artifact, REPO, create_pr=True, commit_message="int8 model")
    assert pr.pr_url == f"{hub.url}/{REPO}/discussions/1" and pr.url == pr.pr_url
    assert "model.onnx" in hub.files(REPO, "refs/pr/1") and "model.onnx" not in hub.files(REPO, "main")


def test_cli_push_prints_the_commit_url_then_up_to_date(hub, artifact):
    first = runner.invoke(app, ["push", str(artifact), "--repo-id", REPO, "--private", "--commit-message", "int8"])
    assert first.exit_code == 0, first.output
    assert f"{hub.url}/{REPO}/commit/" in first.output.replace("\n", "")
    assert hub.repos[REPO].private is True
    second = runner.invoke(app, ["push", str(artifact), "--repo-id", REPO])
    assert second.exit_code == 0 and "already up to date" in second.output
    assert hub.commits(REPO) == 1
    assert TOKEN not in first.output + second.output


# --------------------------------------------------------------------------- model card
def test_card_metadata_round_trips_through_model_card_load(hub, artifact, tiny_data_dir):
    from huggingface_hub import ModelCard

    push_artifact(artifact, REPO)
    report = json.loads((artifact / "quantkit_report.json").read_text())
    card = ModelCard.load(REPO)
    data = card.data
    assert data.library_name == "onnx" and data.pipeline_tag == "text-classification"
    assert {"onnx", "int8", "quantkit", "transformers", "optimum", "dynamic-quantization"} <= set(data.tags)
    assert data.license == "apache-2.0"  # carried from the base model's README
    assert data.base_model is None  # the base is a local folder, not a Hub id
    assert data.model_name == "spam-int8"
    results = {r.metric_name: r for r in data.eval_results}
    assert set(results) == {"Accuracy (FP32)", "Accuracy (INT8)"}
    assert results["Accuracy (FP32)"].metric_value == round(report["fp32"]["value"], 6)
    assert results["Accuracy (INT8)"].metric_value == round(report["quantized"]["value"], 6)
    assert results["Accuracy (INT8)"].dataset_type == f"{tiny_data_dir.name}/validation.jsonl"  # folder and file
    assert results["Accuracy (INT8)"].task_type == "text-classification"
    text = card.text
    assert f'ORTModelForSequenceClassification.from_pretrained("{REPO}")' in text and "pipeline(" in text
    cpu = report["environment"]["cpu"]
    assert cpu["model"] in text and f"{report['quantized']['size_mb']:.1f}" in text
    for flag in cpu["features"]:
        assert flag in text
    assert str(artifact.parent) not in card.content  # no local paths


def _synthetic_report() -> dict:
    node = "/bert/encoder/layer.1/output/dense/MatMul"
    return {
        "created": "2026-01-01T00:00:00+00:00",
        "model": {"name_or_path": "org/base-model", "revision": None, "task": "text-classification"},
        "export": {"opset": 18, "max_abs_diff": 1e-6},
        "quantization": {"backend": "onnxruntime", "config": {
            "approach": "static", "format": "qdq", "weight_type": "int8", "activation_type": "uint8",
            "per_channel": True, "symmetric_weights": True, "op_types": ["MatMul"], "nodes_to_exclude": [node],
            "calibration": {"method": "percentile", "num_samples": 64, "percentile": 99.99}},
            "graph": {"ops": {"QuantizeLinear": 10, "DequantizeLinear": 20}, "quantized_weights": 12}},
        "evaluation": {"dataset": "nyu-mll/glue", "split": "validation", "examples": 872, "max_length": 128,
                       "metric": "f1"},
        "fp32": {"metric": "f1", "value": 0.91, "size_bytes": 4_000_000, "size_mb": 3.815,
                 "latency": {"batch_size": 8, "sequence_length": 128, "threads": 4, "p50_ms": 20.0, "p90_ms": 22.0}},
        "quantized": {"metric": "f1", "value": 0.905, "size_bytes": 1_000_000, "size_mb": 0.954,
                      "latency": {"batch_size": 8, "sequence_length": 128, "threads": 4, "p50_ms": 10.0,
                                  "p90_ms": 11.0}},
        "environment": {"cpu": {"model": "Intel Xeon Platinum 8480+", "arch": "x86_64", "logical_cores": 8,
                                "physical_cores": 4, "features": ["avx512_vnni", "amx_int8"], "has_vnni": True},
                        "packages": {"onnxruntime": "1.31.1"}},
        "spec": {"data": {"evaluation": {"path": "nyu-mll/glue", "name": "sst2", "split": "validation"}}},
        "tuning": {"strategy": "fallback", "objective": "latency", "target": "metric >= 0.9009", "space_size": 4,
                   "counts": {"ok": 3, "pruned": 1, "failed": 0}, "chosen_trial": 2, "reason": "within tolerance",
                   "fallback_nodes": [{"node": node, "metric_gain": 0.004}],
                   "trials": [{"trial": 2, "config": "approach=static", "status": "ok", "metric": 0.905,
                               "latency_ms": 10.0, "size_mb": 0.95, "passed": True}]},
    }


def test_card_text_from_a_report_with_tuning_and_fallback_nodes():
    text = model_card_text(_synthetic_report(), "me/glue-int8", files=["model.onnx", "tuning.png"],
                           base_model="org/base-model", license="mit")
    card = validate_model_card(text)
    assert card.data.base_model == "org/base-model" and card.data.base_model_relation == "quantized"
    assert card.data.license == "mit" and card.data.datasets == ["nyu-mll/glue"]
    assert {r.dataset_config for r in card.data.eval_results} == {"sst2"}
    assert {r.metric_value for r in card.data.eval_results} == {0.91, 0.905}
    body = card.text
    assert "/bert/encoder/layer.1/output/dense/MatMul" in body and "0.0040" in body  # fallback node and its gain
    assert "Strategy: fallback" in body and "![metric vs latency of every trial](tuning.png)" in body
    assert "| p50 latency (batch 8 × 128 tokens, 4 threads) | 20.00 ms | 10.00 ms | 0.50× |" in body
    assert "| model size (MB) | 3.8 | 1.0 | 0.25× |" in body
    assert "percentile, 64 samples" in body and "avx512_vnni, amx_int8" in body and "VNNI (int8 dot products): yes" in body
    assert model_card_text(_synthetic_report(), "me/glue-int8", files=["model.onnx", "tuning.png"],
                           base_model="org/base-model", license="mit") == text  # deterministic


def test_base_model_comes_from_a_local_folders_readme(tmp_path):
    """A folder saved from the Hub keeps `base_model` in its README's front matter: the card links it; a value that
    is no repo id is ignored; an explicit one or a Hub id as the model wins."""
    from quantkit.card import find_base_model

    folder = tmp_path / "my-finetune"
    folder.mkdir()
    report = {"model": {"name_or_path": str(folder)}}
    assert find_base_model(report) is None
    (folder / "README.md").write_text("---\nbase_model: sentence-transformers/all-MiniLM-L6-v2\n---\n# x\n")
    assert find_base_model(report) == "sentence-transformers/all-MiniLM-L6-v2"
    (folder / "README.md").write_text("---\nbase_model: [org/a]\n---\n# x\n")
    assert find_base_model(report) == "org/a"
    (folder / "README.md").write_text("---\nbase_model: not a repo id!\n---\n# x\n")
    assert find_base_model(report) is None
    assert find_base_model(report, "org/explicit") == "org/explicit"
    assert find_base_model({"model": {"name_or_path": "org/hub-model"}}) == "org/hub-model"


def test_push_without_a_base_model_warns_with_the_option_to_name_it(hub, artifact, caplog):
    import logging

    from quantkit.hub import plan_push

    with caplog.at_level(logging.WARNING, logger="quantkit.hub"):
        plan = plan_push(artifact, REPO)
    assert "base_model:" not in plan.card.split("---")[1]
    assert [r.getMessage() for r in caplog.records if "--base-model ORG/NAME" in r.getMessage()], caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="quantkit.hub"):
        plan = plan_push(artifact, REPO, base_model="org/base-model")
    assert "base_model: org/base-model" in plan.card and "--base-model" not in caplog.text


def test_license_is_looked_up_on_the_base_models_hub_card(hub):
    hub.add_repo("org/base-model", {"README.md": b"---\nlicense: mit\n---\n# base\n", "config.json": b"{}"})
    assert base_model_license("org/base-model") == "mit"
    assert base_model_license("org/unknown") is None  # 404: omitted


# --------------------------------------------------------------------------- secrets
def test_token_never_appears_in_uploads_logs_or_messages(hub, artifact, caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("huggingface_hub", "urllib3", "quantkit"):  # libraries that set their own levels
        caplog.set_level(logging.DEBUG, logger=name)
    push_artifact(artifact, REPO)
    push_artifact(artifact, REPO)
    hub.fail(500, method="POST", path_contains="/preupload/", message=f"echo {TOKEN}")
    with pytest.raises(HubError) as info:  # a new repo: the files must be uploaded again
        push_artifact(artifact, "quantkit-tests/other", retry=no_wait([]))
    assert TOKEN not in str(info.value) and "***" in str(info.value)  # a server echoing it is scrubbed
    assert all(r.authorized for r in hub.requests if r.method == "POST" and not r.faulted)
    for name, data in hub.files(REPO).items():
        assert TOKEN.encode() not in data, name
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "retrying in" in logged and "huggingface_hub" in {r.name.split(".")[0] for r in caplog.records}
    assert TOKEN not in logged
    assert git_sha1(hub.files(REPO)["model.onnx"]) == git_sha1((artifact / "model.onnx").read_bytes())


def test_retry_policy_backoff_is_exponential_and_capped():
    assert list(RetryPolicy(attempts=6, initial_delay=1.0, max_delay=4.0).delays()) == [1.0, 2.0, 4.0, 4.0, 4.0]
    assert list(RetryPolicy(attempts=1).delays()) == []


def test_local_file_matches_lfs_and_regular_remote_entries(tmp_path):
    from huggingface_hub.hf_api import RepoFile

    from quantkit.hub import LocalFile

    data = b"\x08\x01onnx bytes" * 100
    (tmp_path / "model.onnx").write_bytes(data)
    local = LocalFile.from_path("model.onnx", tmp_path / "model.onnx")
    in_memory = LocalFile.from_bytes("model.onnx", data)
    assert (local.size, local.sha256, local.git_sha1) == (in_memory.size, in_memory.sha256, git_sha1(data))
    lfs = {"oid": local.sha256, "size": len(data), "pointerSize": 134}  # the Hub's tree entry of an LFS file
    assert local.same_as(RepoFile(path="model.onnx", size=len(data), oid="pointer-oid", lfs=lfs))
    assert not local.same_as(RepoFile(path="model.onnx", size=len(data), oid="x", lfs={**lfs, "oid": "0" * 64}))
    assert local.same_as(RepoFile(path="model.onnx", size=len(data), oid=git_sha1(data)))
    assert not local.same_as(RepoFile(path="model.onnx", size=len(data) + 1, oid=git_sha1(data)))
    assert not local.same_as(None)


def test_failed_push_after_quantize_keeps_the_artifacts_and_says_how_to_retry(hub, auto_pushed):
    from quantkit.specio import parse_spec

    result = auto_pushed[0]
    spec = parse_spec({**result.report["spec"], "hub": {"repo_id": REPO, "push": True}})
    hub.fail(401)
    with pytest.raises(HubAuthError) as info:
        Quantizer._push_if_asked(spec, result)
    message = str(info.value)
    assert f"quantkit push {result.output_dir} --repo-id {REPO}" in message and info.value.exit_code == 2
    assert (result.output_dir / "model.onnx").is_file()
    hub.reset()
    no_push = parse_spec({**result.report["spec"], "hub": {"repo_id": REPO, "push": False}})
    assert Quantizer._push_if_asked(no_push, result) is result and hub.requests == []


def test_cli_summary_shows_where_it_was_pushed(auto_pushed):
    from quantkit import cli

    with cli.out.capture() as captured:
        cli._render(auto_pushed[0])
    assert f"hub: {auto_pushed[0].push.commit_url}" in captured.get().replace("\n", "")


def test_quantizer_from_pretrained_points_an_artifact_to_load_quantized(artifact):
    from quantkit.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="quantized by quantkit") as info:
        Quantizer.from_pretrained(artifact)
    assert "load_quantized" in info.value.hint and info.value.exit_code == 2
    assert Quantizer.load_quantized(artifact).output_dir == artifact


# --------------------------------------------------------------------------- malformed answers (issue 16)
from hubserver import MALFORMED  # noqa: E402

_ROUTES = [("POST", "/api/repos/create"), ("GET", "/tree/"), ("POST", "/preupload/"), ("POST", "/commit/")]


@pytest.mark.parametrize("kind", MALFORMED)
@pytest.mark.parametrize("method, route", _ROUTES, ids=[r for _, r in _ROUTES])
def test_malformed_hub_answers_are_hub_errors_naming_the_endpoint(hub, artifact, kind, method, route):
    before = folder_state(artifact)
    hub.malform(kind, method=method, path_contains=route)
    try:
        result = push_artifact(artifact, REPO, retry=no_wait([]))
    except HubError as exc:
        assert hub.url in str(exc) and REPO in str(exc), str(exc)
        assert TOKEN not in str(exc)
    else:  # a body huggingface_hub does not read (e.g. a create answer's extra fields) may still succeed
        assert result.repo_id == REPO
    assert folder_state(artifact) == before  # local files untouched


def test_malformed_answer_in_cli_push_is_not_unexpected(hub, artifact):
    hub.malform("not-json", method="POST", path_contains="/commit/")
    out = runner.invoke(app, ["push", str(artifact), "--repo-id", REPO])
    assert out.exit_code == 1, out.output
    assert "unexpected TypeError" not in out.output and "Hub" in out.output


# --------------------------------------------------------------------------- other tasks
def test_push_a_tagger_and_a_sentence_encoder_and_load_them_back(hub, tiny_task_models, tiny_task_data, tmp_path):
    """Every task's artifact publishes with its own card (pipeline tag, metric, ORTModel class) and loads
    back from the repo id with quantkit's runtime, giving the local folder's outputs (ORTModelFor* loading by
    repo id is the optimum stack's test above)."""
    from huggingface_hub import ModelCard
    from transformers import AutoTokenizer

    from quantkit.runtime import load
    from quantkit.tasks import get_task

    for task, extra, metric in (("token-classification", "", "f1"),
                                ("feature-extraction", "text_columns: [sentence1, sentence2], label_column: score, ",
                                 "spearman")):
        spec = write_spec(tmp_path / task / "spec.yaml", f"""
spec_version: 1
model: {{name_or_path: {tiny_task_models[task]}}}
quantization: {{approach: dynamic}}
data:
  evaluation: {{{extra}path: {tiny_task_data[task]}}}
  max_length: 32
evaluation:
  latency: {{batch_size: 2, sequence_length: 16, warmup: 1, repeats: 3, rounds: 1}}
output: {{dir: artifacts}}
""")
        result = Quantizer.from_pretrained(tiny_task_models[task]).quantize(spec, progress=False)
        repo = f"quantkit-tests/tiny-{task}"
        push_artifact(result.output_dir, repo)
        card = ModelCard.load(repo)
        assert card.data.pipeline_tag == get_task(task).pipeline_tag
        assert card.data.eval_results[0].metric_type == metric
        assert get_task(task).ort_model in card.text
        cache = tmp_path / task / "cache"
        remote, local = load(repo, cache_dir=cache), load(result.output_dir)
        assert remote.folder != local.folder and remote.task.name == task
        enc = dict(AutoTokenizer.from_pretrained(remote.folder)(TEXTS, padding=True, return_tensors="np"))
        name = get_task(task).output_names[0]
        np.testing.assert_array_equal(remote.run(enc)[name], local.run(enc)[name])
        assert len(remote(TEXTS)) == len(TEXTS)


# --------------------------------------------------------------------------- a causal LM
def test_a_text_generation_artifact_pushes_with_its_card_and_generates_from_the_hub(hub, decoder_dirs, text_file,
                                                                                     tmp_path):
    """Weight-only int4 of a tiny Llama: pushed, its card says text-generation with perplexity (lower is better),
    KL and decode tokens/s, and quantkit.runtime generates the same tokens from the repo as from the folder."""
    from huggingface_hub import ModelCard

    from quantkit.runtime import load
    from quantkit.specio import parse_spec

    from tiny_decoders import llm_spec

    spec = parse_spec(llm_spec(decoder_dirs["llama"], text_file, tmp_path / "llm", limit=4, weight_only={"bits": 4}))
    result = Quantizer.from_pretrained(str(decoder_dirs["llama"])).quantize(spec, progress=False)
    repo = "quantkit-tests/tiny-llama-int4"
    pushed = push_artifact(result.output_dir, repo)
    assert "model.onnx" in pushed.uploaded and "README.md" in pushed.uploaded
    card = ModelCard(hub.files(repo)["README.md"].decode())
    assert card.data.pipeline_tag == "text-generation" and "int4" in card.data.tags
    assert [r.metric_type for r in card.data.eval_results] == ["perplexity", "perplexity"]
    assert "kl_divergence vs FP32" in card.text and "decode tokens/s" in card.text
    prompt = [5, 6, 7, 8]
    remote = load(repo, cache_dir=tmp_path / "cache").generate(prompt, max_new_tokens=5, details=True)
    assert remote.token_ids == load(result.output_dir).generate(prompt, max_new_tokens=5, details=True).token_ids
