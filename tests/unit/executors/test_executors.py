"""Executors without a cluster: spec, registry, pre-flight, batched trials told in order, CPU records
and the refusal to compare latencies from different CPUs, the trial store's new column, and sharded
evaluation on the local executor (same predictions as unsharded, QA examples split across shards).
The Ray executor itself is tested in test_ray_cluster.py."""

from __future__ import annotations

import os
import sqlite3
import sys

import numpy as np
import pytest
from conftest import write_spec
from typer.testing import CliRunner

from quantkit.cli import app
from quantkit.errors import ExecutorUnavailableError, RegistryError, SpecError, TimingMismatchError
from quantkit.executors import EXECUTORS, Executor, JobResult, LocalExecutor, make_executor, node_hardware
from quantkit.evaluation import predict
from quantkit.executors.shards import shard_bounds
from quantkit.search.space import config_hash
from quantkit.search.store import Trial, TrialStore
from quantkit.search.strategies import Measurement, SearchContext, TrialOutcome, run_search
from quantkit.search.tolerance import Tolerance
from quantkit.spec import EvaluationSpec, QuantizationConfig
from quantkit.specio import load_spec, with_overrides

BASE = QuantizationConfig()


def cfg(**kw) -> QuantizationConfig:
    return BASE.model_copy(update=kw)


A, B, C, D = cfg(per_channel=True), cfg(per_channel=False), cfg(reduce_range=True), cfg(op_types=["MatMul"])
E = cfg(weights_only_matmul=True)


class ScriptedRunner:
    """Fixed (metric, latency) per config; prunes what is slower than the hint; notes the process it ran in.

    ``kill_once`` configs kill their worker process the first time (a marker file remembers), ``kill_always``
    ones every time — only ever run those on Ray workers."""

    def __init__(self, table, baseline=1.0, fail=(), kill_once=(), kill_always=(), marker_dir=None):
        self.table = {config_hash(c): v for c, v in table}
        self.base = baseline
        self.fail = {config_hash(c) for c in fail}
        self.kill_once = {config_hash(c) for c in kill_once}
        self.kill_always = {config_hash(c) for c in kill_always}
        self.marker_dir = str(marker_dir) if marker_dir else None
        self.calls: list[str] = []
        self.hints = []

    def baseline(self) -> Measurement:
        return Measurement(self.base, 100.0, 1000)

    def run(self, config, hint):
        import signal

        h = config_hash(config)
        self.calls.append(h)
        self.hints.append(hint)
        if h in self.kill_always:
            os.kill(os.getpid(), signal.SIGKILL)
        if h in self.kill_once:
            marker = os.path.join(self.marker_dir, h)
            if not os.path.exists(marker):
                open(marker, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)
        if h in self.fail:
            raise RuntimeError("backend exploded")
        metric, latency = self.table[h]
        if hint.max_latency_ms is not None and latency > hint.max_latency_ms:
            return TrialOutcome("pruned", None, latency, 100, note=f"pid {os.getpid()}: slower than best")
        return TrialOutcome("ok", metric, latency, 100, note=f"pid {os.getpid()}")

    def sensitivity(self, config):
        return []


TABLE = [(A, (0.995, 80)), (B, (0.95, 20)), (C, (0.999, 30)), (D, (0.992, 60)), (E, (0.998, 25))]


def search(runner, tmp_path, executor=None, *, strategy="fastest", db="trials.db", candidates=(A, B, C, D, E), **kw):
    with TrialStore(tmp_path / db) as store:
        ctx = SearchContext(runner, Tolerance("relative", 0.01, True), store, "run1", executor=executor, **kw)
        return run_search(strategy, ctx, list(candidates))


def summary(outcome):
    """What must not depend on the executor: every trial (minus where it ran) and the choice."""
    rows = [(t.idx, t.config_hash, t.status, t.metric, t.latency_ms, t.passed, t.origin) for t in outcome.trials]
    return rows, outcome.chosen.config_hash if outcome.chosen else None


# --------------------------------------------------------------------------- spec, registry, pre-flight
def test_executor_spec_defaults_and_validation(spec_text, tmp_path):
    spec = load_spec(write_spec(tmp_path / "a.yaml", spec_text(tuning={})))
    assert spec.tuning.executor.type == "local" and spec.tuning.executor.parallel_trials == 1
    assert spec.evaluation.shards is None and spec.evaluation.executor.type == "local"
    text = spec_text(tuning={"executor": {"type": "ray", "address": "ray://head:10001", "parallel_trials": 4,
                                          "cpus_per_trial": 2}}, **{"evaluation.shards": 3})
    spec = load_spec(write_spec(tmp_path / "b.yaml", text))
    assert (spec.tuning.executor.address, spec.tuning.executor.parallel_trials) == ("ray://head:10001", 4)
    assert spec.evaluation.shards == 3
    with pytest.raises(SpecError, match=r"tuning\.executor\.address: .*not a Ray address"):
        load_spec(write_spec(tmp_path / "c.yaml", spec_text(tuning={"executor": {"type": "ray", "address": "x y"}})))
    with pytest.raises(SpecError, match=r"tuning\.executor\.workers"):
        load_spec(write_spec(tmp_path / "d.yaml", spec_text(tuning={"executor": {"workers": 2}})))
    with pytest.raises(SpecError, match=r"tuning\.executor\.parallel_trials"):
        load_spec(write_spec(tmp_path / "e.yaml", spec_text(tuning={"executor": {"parallel_trials": 0}})))
    with pytest.raises(SpecError, match=r"tuning\.executor\.type"):
        load_spec(write_spec(tmp_path / "f.yaml", spec_text(tuning={"executor": {"type": "dask"}})))


def test_registry_names_and_unknown():
    assert EXECUTORS.names() == ["local", "ray"]
    assert isinstance(make_executor(EvaluationSpec().executor), LocalExecutor)
    with pytest.raises(RegistryError, match="unknown executor 'dask'; known: local, ray"):
        EXECUTORS.get("dask")


def test_ray_missing_is_a_clear_preflight_error(monkeypatch, spec_text, tmp_path):
    import quantkit.checks.executors as checks

    monkeypatch.setattr(checks, "ray_missing", lambda: "Ray is not installed")
    spec = write_spec(tmp_path / "spec.yaml", spec_text(tuning={"space": {"per_channel": [True, False]}},
                                                        output={"dir": "out"}))
    result = CliRunner().invoke(app, ["tune", "--config", str(spec), "--executor", "ray", "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "tuning.executor.type: Ray is not installed" in result.output
    assert "pip install 'quantkit[ray]'" in result.output and "Traceback" not in result.output
    # and without the pre-flight, opening the executor says the same instead of an ImportError traceback
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ExecutorUnavailableError, match="needs Ray") as info:
        EXECUTORS.get("ray")().open()
    assert info.value.exit_code == 2 and isinstance(info.value, ImportError)


def test_preflight_rejects_torch_backends_on_ray_and_warns_about_local_batches(spec_text, tmp_path):
    from quantkit.checks import run_checks

    text = spec_text(tuning={"executor": {"type": "ray"}, "space": {"backend": ["onnxruntime", "neural-compressor"]}})
    report = run_checks(write_spec(tmp_path / "a.yaml", text), only=["files.executors"])
    assert [p.severity for p in report.find("tuning.executor.type")] == ["error"]
    assert "PyTorch model" in report.find("tuning.executor.type")[0].message
    report = run_checks(write_spec(tmp_path / "b.yaml", spec_text(tuning={"executor": {"parallel_trials": 3}})),
                        only=["files.executors"])
    assert [p.severity for p in report.find("tuning.executor.parallel_trials")] == ["warning"]
    sharded = spec_text(**{"evaluation.executor": {"type": "ray"}})
    report = run_checks(write_spec(tmp_path / "c.yaml", sharded), only=["files.executors"])
    assert [p.severity for p in report.find("evaluation.executor")] == ["warning"]


def test_run_key_does_not_depend_on_the_executor(tiny_loaded, spec_text, tmp_path):
    from quantkit.search.tune import run_key

    local = load_spec(write_spec(tmp_path / "a.yaml", spec_text(tuning={})))
    ray = with_overrides(local, **{"tuning.executor.type": "ray", "tuning.executor.parallel_trials": 4,
                                  "evaluation.executor.type": "ray", "evaluation.shards": 4})
    assert run_key(local, tiny_loaded) == run_key(ray, tiny_loaded)
    assert run_key(local, tiny_loaded) != run_key(with_overrides(local, **{"evaluation.batch_size": 7}), tiny_loaded)


# --------------------------------------------------------------------------- batches, order, CPU records
class ReversedExecutor(Executor):
    """Runs a batch last-first (as a cluster may finish it) and records the batches it was given."""

    name = "reversed"

    def __init__(self, parallel_trials: int, timed_on: dict | None = None) -> None:
        super().__init__(parallel_trials=parallel_trials)
        self.batches: list[list[str]] = []
        self.timed_on = timed_on

    def run_trials(self, runner, jobs):
        self.batches.append([config_hash(j.config) for j in jobs])
        here = node_hardware()
        out = [JobResult(runner.run(j.config, j.hint), hardware={"scored_on": here, "timed_on": self.timed_on or here})
               for j in reversed(jobs)]
        return out[::-1]


def test_batches_get_one_hint_and_are_told_in_space_order(tmp_path):
    seen = []
    runner = ScriptedRunner(TABLE)
    ex = ReversedExecutor(2)
    out = search(runner, tmp_path, ex, on_trial=lambda t, ctx: seen.append(t.config_hash))
    hashes = [config_hash(c) for c in (A, B, C, D, E)]
    assert ex.batches == [hashes[0:2], hashes[2:4], hashes[4:5]]
    assert seen == hashes and [t.idx for t in out.trials] == [0, 1, 2, 3, 4]
    assert runner.hints[0].max_latency_ms is None and runner.hints[1].max_latency_ms is None  # first batch: no best
    assert runner.hints[2].max_latency_ms == 80 and runner.hints[3].max_latency_ms == 80  # A passed in batch 1
    assert out.chosen.config_hash == config_hash(E)
    assert all(t.hardware["timed_on"]["model"] == node_hardware()["model"] for t in out.trials)
    # a batch of one is the sequential search; the local executor with the same batches gives the same trials
    assert summary(search(ScriptedRunner(TABLE), tmp_path, LocalExecutor(parallel_trials=2), db="b.db")) == summary(out)
    sequential = search(ScriptedRunner(TABLE), tmp_path, db="c.db")
    assert [t.status for t in sequential.trials] == ["ok", "ok", "ok", "pruned", "ok"]  # D pruned: C was best
    assert sequential.chosen.config_hash == out.chosen.config_hash


def test_budget_is_counted_inside_a_batch(tmp_path):
    runner = ScriptedRunner(TABLE)
    out = search(runner, tmp_path, LocalExecutor(parallel_trials=4), max_trials=3)
    assert len(out.trials) == 3 and len(runner.calls) == 3


def test_basic_strategy_with_batches_stops_at_the_first_passing_in_order(tmp_path):
    runner = ScriptedRunner([(B, (0.95, 20)), (A, (0.995, 80)), (C, (0.999, 30)), (D, (0.992, 60))])
    out = search(runner, tmp_path, ReversedExecutor(3), strategy="basic", candidates=(B, A, C, D))
    assert out.chosen.config_hash == config_hash(A) and len(out.trials) == 3  # the batch B, A, C ran together
    assert config_hash(D) not in runner.calls


def test_latencies_from_another_cpu_are_refused(tmp_path):
    other = {**node_hardware(), "model": "Some Other CPU @ 1.0GHz", "node": "elsewhere"}
    with pytest.raises(TimingMismatchError, match="Some Other CPU.*not compared"):
        search(ScriptedRunner(TABLE), tmp_path, ReversedExecutor(2, timed_on=other))


def test_stored_trials_timed_on_another_cpu_run_again(tmp_path):
    first = search(ScriptedRunner(TABLE), tmp_path)
    assert all(t.hardware["scored_on"]["features"] == node_hardware()["features"] for t in first.trials)
    with TrialStore(tmp_path / "trials.db") as store:  # pretend trial C was timed elsewhere
        trial = store.get("run1", config_hash(C))
        trial.hardware = {"scored_on": trial.hardware["scored_on"], "timed_on": {"model": "Other", "features": []}}
        store.put("run1", trial)
    runner = ScriptedRunner(TABLE)
    again = search(runner, tmp_path)
    assert runner.calls == [config_hash(C)]
    assert summary(again) == summary(first)


def test_store_adds_the_hardware_column_to_an_old_database(tmp_path):
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE trials (key TEXT PRIMARY KEY, run TEXT NOT NULL, idx INTEGER NOT NULL, origin TEXT "
                    "NOT NULL, config_hash TEXT NOT NULL, config TEXT NOT NULL, status TEXT NOT NULL, metric REAL, "
                    "latency_ms REAL, size_bytes INTEGER, passed INTEGER NOT NULL DEFAULT 0, loss REAL, error TEXT, "
                    "note TEXT, model_path TEXT, started REAL, duration_s REAL)")
        con.execute("INSERT INTO trials VALUES ('r:h', 'r', 0, 'space', 'h', '{}', 'ok', 0.9, 10, 1, 1, 0, NULL, NULL, "
                    "NULL, 0, 1)")
    with TrialStore(db) as store:
        old = store.get("r", "h")
        assert old.metric == 0.9 and old.hardware is None
        store.put("r", Trial(idx=1, origin="space", config_hash="h2", config={}, status="ok",
                             hardware={"scored_on": {"model": "x"}, "timed_on": {"model": "x"}}))
        assert store.get("r", "h2").hardware["timed_on"] == {"model": "x"}


# --------------------------------------------------------------------------- sharded evaluation (local executor)
def test_shard_bounds_are_whole_batches():
    assert shard_bounds(48, 3, 8) == [(0, 16), (16, 32), (32, 48)]
    assert shard_bounds(50, 4, 8) == [(0, 16), (16, 32), (32, 48), (48, 50)]
    assert shard_bounds(10, 8, 4) == [(0, 4), (4, 8), (8, 10)]  # never more shards than batches
    for rows, shards, bs in ((1, 1, 1), (97, 5, 7), (33, 2, 32), (8, 3, 1)):
        bounds = shard_bounds(rows, shards, bs)
        assert bounds[0][0] == 0 and bounds[-1][1] == rows and len(bounds) <= shards
        assert all(a[1] == b[0] and a[0] % bs == 0 for a, b in zip(bounds, bounds[1:]))


def tiny_eval(tiny_loaded, tiny_data_dir):
    from quantkit.data import load_text_dataset
    from quantkit.spec import DatasetSpec
    from quantkit.tasks import task_for

    task = task_for("text-classification", tiny_loaded.config)
    data = load_text_dataset(DatasetSpec(path=str(tiny_data_dir / "validation.jsonl")), tiny_loaded.tokenizer, task,
                             key="data.evaluation", max_length=32, padding="longest")
    return task, data


def qa_setup(models, datasets, tmp_path):
    """The tiny QA reader exported to ONNX, its task and its data (several rows per long example)."""
    from types import SimpleNamespace

    from quantkit.data import load_text_dataset
    from quantkit.export import export_onnx
    from quantkit.models import load_model
    from quantkit.spec import DatasetSpec, ExportSpec
    from quantkit.tasks import task_for
    from quantkit.spec import TaskOptionsSpec

    loaded = load_model(str(models["question-answering"]), task="question-answering")
    fp32 = export_onnx(loaded, tmp_path / "qa-onnx", ExportSpec())
    task = task_for("question-answering", loaded.config, TaskOptionsSpec(doc_stride=16))
    data = load_text_dataset(DatasetSpec(path=str(datasets["question-answering"])), loaded.tokenizer, task,
                             key="data.evaluation", max_length=64, padding="max_length")
    return SimpleNamespace(path=fp32.path, task=task, data=data)


def test_sharded_equals_unsharded_on_the_local_executor(tiny_loaded, tiny_fp32, tiny_data_dir, tiny_task_models,
                                                        tiny_task_data, tmp_path):
    task, data = tiny_eval(tiny_loaded, tiny_data_dir)
    whole = predict(tiny_fp32.path, data, EvaluationSpec(batch_size=8), task)
    sharded = predict(tiny_fp32.path, data, EvaluationSpec(batch_size=8, shards=4), task)
    assert len(whole) == len(data) == 48 and np.array_equal(whole, sharded)

    qa = qa_setup(tiny_task_models, tiny_task_data, tmp_path)
    spec = EvaluationSpec(batch_size=4, shards=5)
    bounds = shard_bounds(len(qa.data), 5, 4)
    example = qa.data.meta["example"]
    assert any(example[b - 1] == example[b] for _, b in bounds[:-1]), "no example split across shards"
    whole = predict(qa.path, qa.data, EvaluationSpec(batch_size=4), qa.task)
    sharded = predict(qa.path, qa.data, spec, qa.task)
    assert len(whole) == 40 and whole == sharded
    assert qa.task.compute("f1", sharded, qa.data) == qa.task.compute("f1", whole, qa.data)
