"""quantkit.benchmark and `quantkit benchmark` on the tiny model (warmup 1, repeats 3, rounds 1, 1 thread)."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import pytest
from conftest import write_spec
from typer.testing import CliRunner

from quantkit import ArtifactNotFoundError, BenchmarkError, Quantizer
from quantkit.benchmark import BenchmarkResult, _limits, benchmark, resolve_models
from quantkit.cli import app

FAST = dict(threads=1, warmup=1, repeats=3, rounds=1)
FAST_CLI = ["--threads", "1", "--warmup", "1", "--repeats", "3", "--rounds", "1"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: throughput is batch / (p50 / 1000) in the probe; only float rounding separates it from batch * 1000 / p50.
THROUGHPUT_RTOL = 1e-9

runner = CliRunner()


@pytest.fixture(scope="module")
def artifact(tiny_model_dir, tiny_data_dir, tiny_fp32, tmp_path_factory) -> Path:
    """A dynamic-int8 artifact folder of the tiny model with the FP32 export kept in fp32/model.onnx."""
    root = tmp_path_factory.mktemp("bench-artifact")
    spec = write_spec(root / "spec.yaml", f"""
spec_version: 1
quantization: {{approach: dynamic}}
data:
  evaluation: {{path: {tiny_data_dir / 'validation.jsonl'}}}
  max_length: 16
evaluation:
  metric: agreement
  latency: {{batch_size: 1, sequence_length: 8, warmup: 1, repeats: 3, rounds: 1, threads: 1}}
output:
  dir: tiny-int8
""")
    out = Quantizer.from_pretrained(tiny_model_dir).quantize(spec, progress=False).output_dir
    (out / "fp32").mkdir()
    shutil.copyfile(tiny_fp32.path, out / "fp32" / "model.onnx")
    return out


@pytest.fixture(scope="module")
def plain_onnx_dir(tiny_fp32, tmp_path_factory) -> Path:
    """An ONNX export folder with only model.onnx (no config.json)."""
    path = tmp_path_factory.mktemp("plain") / "tiny-export"
    path.mkdir()
    shutil.copyfile(tiny_fp32.path, path / "model.onnx")
    return path


@pytest.fixture(scope="module")
def bench(artifact, plain_onnx_dir, tmp_path_factory) -> BenchmarkResult:
    out = tmp_path_factory.mktemp("bench-out") / "results"
    return benchmark([artifact, plain_onnx_dir], batch_sizes=[1, 2], sequence_lengths=[8, 16], output_dir=out,
                     **FAST)


# --------------------------------------------------------------------------- the API
def test_rows_for_every_model_and_shape(bench, artifact):
    labels = ["tiny-int8", "tiny-int8 (fp32)", "tiny-export"]
    assert [m.label for m in bench.models] == labels
    assert {(r.model, r.batch_size, r.sequence_length) for r in bench.rows} == set(
        itertools.product(labels, [1, 2], [8, 16]))
    assert len(bench.rows) == 12
    for r in bench.rows:
        assert 0 < r.p50_ms <= r.p90_ms <= r.p99_ms, r
        assert r.throughput == pytest.approx(r.batch_size * 1000 / r.p50_ms, rel=THROUGHPUT_RTOL)
        assert r.peak_rss_mb > 0 and r.load_s > 0 and r.threads == 1
    assert bench.row("tiny-int8", 1, 8).path == str(artifact / "model.onnx")
    assert bench.settings["batch_sizes"] == [1, 2] and bench.settings["sequence_lengths"] == [8, 16]


def test_fp32_baseline_and_ratio(bench, artifact):
    by_label = {m.label: m for m in bench.models}
    assert by_label["tiny-int8"].precision == "int8" and by_label["tiny-int8"].baseline == "tiny-int8 (fp32)"
    assert by_label["tiny-int8 (fp32)"].precision == "fp32"
    assert by_label["tiny-int8 (fp32)"].path == artifact / "fp32" / "model.onnx"
    assert by_label["tiny-export"].precision == "fp32" and by_label["tiny-export"].baseline is None
    for batch, seq in itertools.product([1, 2], [8, 16]):
        int8, fp32 = bench.row("tiny-int8", batch, seq), bench.row("tiny-int8 (fp32)", batch, seq)
        assert int8.baseline == "tiny-int8 (fp32)"
        assert int8.vs_fp32 == pytest.approx(int8.p50_ms / fp32.p50_ms, rel=1e-12)
        assert fp32.vs_fp32 == 1.0 and fp32.baseline is None
        assert bench.row("tiny-export", batch, seq).vs_fp32 is None  # no fp32/ in a plain export


def test_json_written_and_reloadable(bench):
    assert bench.json_path is not None and bench.json_path.name == "benchmark.json"
    data = json.loads(bench.json_path.read_text())
    assert data == json.loads(json.dumps(bench.to_dict()))
    again = BenchmarkResult.load(bench.json_path)
    assert again.rows == bench.rows
    assert [m.label for m in again.models] == [m.label for m in bench.models]
    assert again.settings == bench.settings
    assert data["rows"][0]["p50_ms"] == bench.rows[0].p50_ms
    assert data["environment"]["cpu"]["logical_cores"] >= 1


def test_plot_is_png(bench, tmp_path):
    assert bench.plot_path is not None and bench.plot_path.name == "benchmark.png"
    for path in (bench.plot_path, bench.plot(tmp_path / "log.png", log_y=True)):
        data = path.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1000


def test_seq_above_max_position_embeddings(artifact, tmp_path):
    with pytest.raises(BenchmarkError) as info:
        benchmark([artifact], batch_sizes=[1], sequence_lengths=[8, 129], output_dir=tmp_path / "o", **FAST)
    message = str(info.value)
    assert "129" in message and "128" in message and "max_position_embeddings" in message
    assert info.value.exit_code == 2
    assert not (tmp_path / "o").exists()  # checked before measuring or writing anything


def test_bad_settings(artifact):
    with pytest.raises(BenchmarkError, match="batch sizes must be positive"):
        benchmark([artifact], batch_sizes=[0], sequence_lengths=[8], **FAST)
    with pytest.raises(BenchmarkError, match="no sequence lengths"):
        benchmark([artifact], batch_sizes=[1], sequence_lengths=[], **FAST)
    with pytest.raises(BenchmarkError, match="repeats must be at least 3"):
        benchmark([artifact], batch_sizes=[1], sequence_lengths=[8], threads=1, warmup=1, repeats=2, rounds=1)


def test_roberta_position_limit():
    vocab, limit, note = _limits({"model_type": "roberta", "vocab_size": 50265, "max_position_embeddings": 514,
                                  "pad_token_id": 1}, Path("config.json"))
    assert (vocab, limit) == (50265, 512) and "padding offset 2" in note
    assert _limits({"model_type": "bert", "max_position_embeddings": 512}, Path("c.json"))[1] == 512
    assert _limits({}, Path("c.json")) == (None, None, None)


# --------------------------------------------------------------------------- resolving models (no timing)
def test_resolve_kinds_of_models(artifact, plain_onnx_dir, tiny_fp32, tiny_model_dir):
    vocab = json.loads((tiny_model_dir / "config.json").read_text())["vocab_size"]
    models = resolve_models([artifact, plain_onnx_dir, tiny_fp32.path], include_fp32=False)
    assert [m.label for m in models] == ["tiny-int8", "tiny-export", tiny_fp32.path.parent.name]
    assert all(m.baseline is None for m in models)  # --no-fp32
    int8, plain, direct = models
    assert int8.max_sequence_length == 128 and int8.vocab_size == vocab
    assert plain.vocab_size == vocab and plain.max_sequence_length is None  # vocab read from the ONNX graph
    assert direct.path == tiny_fp32.path and direct.precision == "fp32"


def test_label_collisions_disambiguated(artifact, tmp_path):
    for parent in ("a", "b"):
        shutil.copytree(artifact, tmp_path / parent / "tiny-int8")
    labels = [m.label for m in resolve_models([tmp_path / "a" / "tiny-int8", tmp_path / "b" / "tiny-int8"])]
    assert labels == ["a/tiny-int8", "a/tiny-int8 (fp32)", "b/tiny-int8", "b/tiny-int8 (fp32)"]
    twice = [m.label for m in resolve_models([artifact, artifact], include_fp32=False)]
    assert len(set(twice)) == 2 and twice[0] != twice[1]


def test_missing_or_wrong_paths(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactNotFoundError, match="empty has no model.onnx"):
        resolve_models([tmp_path / "empty"])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ArtifactNotFoundError, match="not an .onnx model"):
        resolve_models([tmp_path / "notes.txt"])
    with pytest.raises(ArtifactNotFoundError, match="neither an existing folder nor a Hub repo id"):
        resolve_models([str(tmp_path / "missing")])


@pytest.fixture
def local_hub(tmp_path, monkeypatch):
    """The local Hub of tests/hubserver.py with huggingface_hub pointed at it (as in test_hub.py)."""
    from hubserver import HubServer, reset_hub_sessions
    from huggingface_hub import constants, file_download

    server = HubServer().start()
    template = server.url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(file_download, "HUGGINGFACE_CO_URL_TEMPLATE", template, raising=False)  # hub 0.x
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-login-token"))
    reset_hub_sessions()
    yield server
    reset_hub_sessions()
    server.stop()


def test_hub_repo_id_with_fp32_baseline(local_hub, artifact, tmp_path):
    files = {p.relative_to(artifact).as_posix(): p.read_bytes() for p in artifact.rglob("*") if p.is_file()}
    local_hub.add_repo("quantkit-tests/bench-int8", files)
    result = benchmark(["quantkit-tests/bench-int8"], batch_sizes=[1], sequence_lengths=[8], **FAST)
    assert [r.model for r in result.rows] == ["quantkit-tests/bench-int8", "quantkit-tests/bench-int8 (fp32)"]
    int8, fp32 = result.rows
    assert int8.vs_fp32 == pytest.approx(int8.p50_ms / fp32.p50_ms, rel=1e-12)
    assert Path(fp32.path).parts[-2:] == ("fp32", "model.onnx")


# --------------------------------------------------------------------------- the CLI
def test_cli_table_and_files(artifact, tmp_path):
    out = tmp_path / "o"
    result = runner.invoke(app, ["benchmark", str(artifact), "--batch", "1", "--seq", "8,16", *FAST_CLI,
                                 "--output", str(out)])
    assert result.exit_code == 0, result.output
    for text in ("quantkit benchmark", "tiny-int8 (fp32)", "1×8", "1×16", "p50", "p99", "ex/s", "RSS MB", "load s",
                 "vs FP32", "baseline", "benchmark.json"):
        assert text in result.output, text
    saved = BenchmarkResult.load(out / "benchmark.json")
    assert len(saved.rows) == 4
    row = saved.row("tiny-int8", 1, 8)
    assert f"{row.vs_fp32:.2f}x?" in result.output  # 1 round cannot establish it: marked
    assert row.vs_fp32_low <= row.vs_fp32 <= row.vs_fp32_high
    assert result.output.count("vs FP32 = ") == 1  # the one definition, stated once
    assert (out / "benchmark.png").read_bytes()[:8] == PNG_MAGIC


def test_cli_without_output_writes_nothing(artifact, tmp_path, monkeypatch):
    """Issue #13: a benchmark asked to print leaves no files where it was not told to (no ./benchmark-*)."""
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["benchmark", str(artifact), "--batch", "2", "--seq", "8", *FAST_CLI, "--no-fp32",
                                 "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [(r["model"], r["batch_size"], r["sequence_length"]) for r in data["rows"]] == [("tiny-int8", 2, 8)]
    assert list(tmp_path.iterdir()) == []
    table = runner.invoke(app, ["benchmark", str(artifact), "--batch", "1", "--seq", "8", *FAST_CLI])
    assert table.exit_code == 0, table.output
    assert "vs FP32" in table.output and "wrote" not in table.output
    assert "timings unreliable" in table.output  # one round cannot establish a ratio: said, not hidden
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, expected", [
    (["{missing}"], "neither an existing folder nor a Hub repo id"),
    (["{artifact}", "--batch", "a,b"], "Invalid value for '--batch'"),
    (["{artifact}", "--seq", "8,"], "Invalid value for '--seq'"),
    (["{artifact}", "--seq", "32,4096"], "sequence length 4096 is above the limit of tiny-int8: 128 tokens"),
])
def test_cli_bad_input_exit_2(artifact, tmp_path, args, expected):
    args = [a.format(missing=tmp_path / "missing", artifact=artifact) for a in args]
    result = runner.invoke(app, ["benchmark", *args, *FAST_CLI, "--output", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert expected in " ".join(result.output.split())  # rich may wrap the message
    assert "Traceback" not in result.output
    assert not (tmp_path / "o").exists()
