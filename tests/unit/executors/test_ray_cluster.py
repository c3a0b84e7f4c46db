"""The ray executor on a local Ray cluster (``ray.init(num_cpus=2)``, started once for this module and
shut down after): scripted searches give the same trials and choice as local, a worker killed mid-trial
is retried once then recorded as failed, resume works across executors, a real tiny-model search runs
2 trials at once, and sharded evaluation gives exactly the unsharded predictions."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
from conftest import DROP, write_spec
from test_executors import TABLE, A, B, C, D, E, ScriptedRunner, qa_setup, search, summary, tiny_eval

from quantkit.executors import LocalExecutor, make_executor
from quantkit.evaluation import predict
from quantkit.search.space import config_hash
from quantkit.search.store import TrialStore
from quantkit.spec import EvaluationSpec, ExecutorSpec, ShardExecutorSpec

try:
    import ray
except ImportError:  # the optimum stack has no ray extra; none of these tests is selected there (-m optimum)
    ray = None


@pytest.fixture(scope="module", autouse=True)
def ray_cluster(tmp_path_factory):
    """A 2-CPU local Ray instance for the module (its workers inherit this environment: their node-local
    graph cache goes to a temp folder); workers import the scripted runners of test_executors by value."""
    import test_executors

    assert ray is not None, "the ray executor tests need the quantkit[ray] extra (scripts/setup.sh installs it)"
    ray.cloudpickle.register_pickle_by_value(test_executors)
    saved = os.environ.get("QUANTKIT_RAY_CACHE")
    cache = tmp_path_factory.mktemp("ray-cache")
    os.environ["QUANTKIT_RAY_CACHE"] = str(cache)
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        yield cache
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop("QUANTKIT_RAY_CACHE", None)
        else:
            os.environ["QUANTKIT_RAY_CACHE"] = saved


def ray_executor(parallel: int, cpus: float = 1.0):
    return make_executor(ExecutorSpec(type="ray", parallel_trials=parallel, cpus_per_trial=cpus))


def pids(outcome) -> set[int]:
    return {int(t.note.split()[1].rstrip(":")) for t in outcome.trials if t.note and t.note.startswith("pid")}


@pytest.mark.parametrize("strategy, parallel", [("fastest", 1), ("fastest", 2), ("basic", 2)])
def test_scripted_search_same_trials_and_choice_on_local_and_ray(tmp_path, strategy, parallel):
    local = search(ScriptedRunner(TABLE), tmp_path, LocalExecutor(parallel_trials=parallel), strategy=strategy,
                   db="local.db")
    with ray_executor(parallel) as ex:
        assert ex._owned is False  # the cluster of the fixture: used, not shut down
        remote = search(ScriptedRunner(TABLE), tmp_path, ex, strategy=strategy, db="ray.db")
    assert summary(remote) == summary(local)
    assert remote.chosen is not None and remote.chosen.config_hash == config_hash(E if strategy == "fastest" else A)
    assert pids(remote) and os.getpid() not in pids(remote)  # the trials ran in Ray workers
    assert pids(local) == {os.getpid()}
    assert all(t.hardware["scored_on"]["model"] == t.hardware["timed_on"]["model"] for t in remote.trials)
    assert ray.is_initialized()


def test_worker_killed_mid_trial_is_retried_once_then_recorded_failed(tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    runner = ScriptedRunner(TABLE, kill_once=[C], kill_always=[D], marker_dir=markers)
    with ray_executor(2) as ex:
        out = search(runner, tmp_path, ex)
    by_hash = {t.config_hash: t for t in out.trials}
    retried, lost = by_hash[config_hash(C)], by_hash[config_hash(D)]
    assert retried.status == "ok" and retried.metric == 0.999 and "retried once" in retried.note
    assert (markers / config_hash(C)).exists()
    assert lost.status == "failed" and "worker lost twice" in lost.error
    assert [t.config_hash for t in out.trials] == [config_hash(c) for c in (A, B, C, D, E)]  # the search went on
    assert out.chosen.config_hash == config_hash(E)
    with TrialStore(tmp_path / "trials.db") as store:
        assert store.get("run1", config_hash(D)).status == "failed"


def test_resume_across_executors_reuses_finished_trials(tmp_path):
    reference = search(ScriptedRunner(TABLE), tmp_path, db="reference.db")
    # started on Ray (the budget stops it after 2 trials), finished locally
    with ray_executor(2) as ex:
        first = search(ScriptedRunner(TABLE), tmp_path, ex, db="a.db", max_trials=2)
    assert len(first.trials) == 2
    local = ScriptedRunner(TABLE)
    done = search(local, tmp_path, db="a.db")
    assert local.calls == [config_hash(c) for c in (C, D, E)]
    assert [t.cached for t in done.trials] == [True, True, False, False, False]
    assert done.chosen.config_hash == reference.chosen.config_hash
    # and the other way round: started locally, finished on Ray
    search(ScriptedRunner(TABLE), tmp_path, db="b.db", max_trials=3)
    with ray_executor(1) as ex:
        finished = search(ScriptedRunner(TABLE), tmp_path, ex, db="b.db")
    assert [t.cached for t in finished.trials] == [True, True, True, False, False]
    assert summary(finished) == summary(reference)
    assert {t.hardware["scored_on"]["node"] for t in finished.trials} == {os.uname().nodename}


@pytest.fixture
def tune_spec(tmp_path, spec_text):
    return write_spec(tmp_path / "tune.yaml", spec_text(
        tuning={"strategy": "fastest", "tolerance": {"type": "absolute", "value": 0.5},
                "space": {"approach": ["dynamic", "static"], "per_channel": [True, False]},
                "max_trials": 4, "executor": {"type": "ray", "parallel_trials": 2}},
        output={"dir": "out"},
        **{"quantization.approach": "dynamic", "quantization.per_channel": DROP,
           "quantization.calibration": {"num_samples": 16, "batch_size": 8}, "evaluation.metric": "agreement",
           "evaluation.shards": 2, "evaluation.executor": {"type": "ray"}}))


def test_real_tiny_model_search_with_two_parallel_trials_then_resumed_locally(tune_spec, tmp_path, tiny_model_dir,
                                                                               ray_cluster):
    from typer.testing import CliRunner

    from quantkit import Quantizer
    from quantkit.cli import app
    from quantkit.hardware import cpu_info

    result = Quantizer.from_pretrained(tiny_model_dir).tune(tune_spec, progress=False)
    tuning = result.report["tuning"]
    assert tuning["executor"] == {"type": "ray", "address": None, "parallel_trials": 2, "cpus_per_trial": 1.0}
    trials = tuning["trials"]
    assert len(trials) == 4 and tuning["counts"]["failed"] == 0, trials
    assert all(t["status"] == "ok" and t["metric"] is not None and t["latency_ms"] > 0 for t in trials), trials
    for t in trials:  # scored on a worker, timed here: the CPU of both recorded
        assert t["hardware"]["timed_on"]["model"] == cpu_info().model
        assert t["hardware"]["scored_on"]["features"] == list(cpu_info().features)
    chosen = tuning["chosen_config"]
    shipped = [p for p in (ray_cluster / "quantkit-ray").iterdir() if not p.name.startswith("work-")]
    assert shipped and all((p / "model.onnx").is_file() for p in shipped)  # the graphs, written once per node
    assert result.quantized.value >= result.fp32.value - 0.5 and result.model_path.is_file()
    # the same search again with the local executor: every trial comes from the store
    again = CliRunner().invoke(app, ["tune", "--config", str(tune_spec), "--executor", "local", "--no-progress",
                                     "--overwrite"])
    assert again.exit_code == 0, again.output
    assert again.output.count("(resumed)") == 4
    report = json.loads((tmp_path / "out" / "quantkit_report.json").read_text())
    assert [t["config_hash"] for t in report["tuning"]["trials"]] == [t["config_hash"] for t in trials]
    assert [t["metric"] for t in report["tuning"]["trials"]] == [t["metric"] for t in trials]
    assert report["tuning"]["executor"]["type"] == "local"
    assert report["tuning"]["chosen_config"]["approach"] in {"dynamic", "static"} and chosen["approach"]


def test_sharded_evaluation_on_ray_equals_unsharded(tiny_loaded, tiny_fp32, tiny_data_dir, tiny_task_models,
                                                     tiny_task_data, tmp_path):
    ray_shards = ShardExecutorSpec(type="ray")
    task, data = tiny_eval(tiny_loaded, tiny_data_dir)
    whole = predict(tiny_fp32.path, data, EvaluationSpec(batch_size=8), task)
    sharded = predict(tiny_fp32.path, data, EvaluationSpec(batch_size=8, shards=3, executor=ray_shards), task)
    assert np.array_equal(whole, sharded) and len(sharded) == 48
    qa = qa_setup(tiny_task_models, tiny_task_data, tmp_path)
    whole = predict(qa.path, qa.data, EvaluationSpec(batch_size=4), qa.task)
    sharded = predict(qa.path, qa.data, EvaluationSpec(batch_size=4, shards=5, executor=ray_shards), qa.task)
    assert whole == sharded and len(sharded) == 40
    assert qa.task.compute("f1", sharded, qa.data) == qa.task.compute("f1", whole, qa.data)
    assert ray.is_initialized() and sys.modules["quantkit.executors.base"]._ACTIVE == {}
