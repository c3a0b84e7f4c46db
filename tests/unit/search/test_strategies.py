"""Search strategies driven by scripted runners (fixed metric/latency per config), the trial
store, INC-based space expansion and the tolerance wrapper."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from quantkit.errors import DataError
from quantkit.search.report import describe_config
from quantkit.search.space import SearchPoint, config_hash, expand_space
from quantkit.search.store import TrialStore
from quantkit.search.strategies import (
    STRATEGIES,
    Measurement,
    PruneHint,
    SearchContext,
    TrialOutcome,
    run_search,
)
from quantkit.search.tolerance import Tolerance
from quantkit.spec import QuantizationConfig, ToleranceSpec

BASE = QuantizationConfig()


def cfg(**kw) -> QuantizationConfig:
    return BASE.model_copy(update=kw)


class ScriptedRunner:
    """Returns fixed (metric, latency) per config; ``fail`` configs raise; nodes have fixed effects."""

    def __init__(self, table, baseline=1.0, fail=(), node_effect=None, user_error=()):
        self.table = {config_hash(c): v for c, v in table}
        self.base = baseline
        self.fail = {config_hash(c) for c in fail}
        self.user_error = {config_hash(c) for c in user_error}
        self.node_effect = node_effect or {}  # node -> (metric delta, latency delta)
        self.calls: list[str] = []
        self.hints: list[PruneHint] = []

    def baseline(self) -> Measurement:
        return Measurement(self.base, 100.0, 1000)

    def run(self, config, hint):
        stripped = config.model_copy(update={"nodes_to_exclude": []})
        h = config_hash(stripped)
        self.calls.append(config_hash(config))
        self.hints.append(hint)
        if h in self.user_error:
            raise DataError("data.evaluation.path: file not found")
        if h in self.fail:
            raise RuntimeError("backend exploded")
        metric, latency = self.table[h]
        for node in config.nodes_to_exclude:
            dm, dl = self.node_effect.get(node, (0.0, 0.0))
            metric, latency = metric + dm, latency + dl
        if hint.max_latency_ms is not None and latency > hint.max_latency_ms:
            return TrialOutcome("pruned", None, latency, 100, note="slower than best")
        return TrialOutcome("ok", metric, latency, 100)

    def sensitivity(self, config):
        return sorted(((n, abs(e[0]) + 0.001 * i) for i, (n, e) in enumerate(self.node_effect.items())),
                      key=lambda x: -x[1])


A, B, C, D = cfg(per_channel=True), cfg(per_channel=False), cfg(reduce_range=True), cfg(op_types=["MatMul"])


def ctx_for(runner, tmp_path, *, tol=0.01, kind="relative", higher=True, objective="latency", **kw):
    store = TrialStore(tmp_path / "trials.db")
    return SearchContext(runner, Tolerance(kind, tol, higher), store, "run1", objective=objective, **kw)


def test_basic_stops_at_first_within_tolerance(tmp_path):
    runner = ScriptedRunner([(A, (0.95, 50)), (B, (0.995, 80)), (C, (0.999, 30))])
    out = run_search("basic", ctx_for(runner, tmp_path), [A, B, C])
    assert out.chosen.config_hash == config_hash(B)
    assert len(runner.calls) == 2  # C never tried even though it is faster
    assert "first candidate" in out.reason


def test_fastest_keeps_searching_for_lowest_latency(tmp_path):
    runner = ScriptedRunner([(A, (0.995, 80)), (B, (0.95, 20)), (C, (0.999, 30)), (D, (0.992, 60))])
    out = run_search("fastest", ctx_for(runner, tmp_path), [A, B, C, D])
    assert out.chosen.config_hash == config_hash(C)  # B is faster but out of tolerance
    assert len(out.trials) == 4


def test_fastest_prunes_slower_candidates(tmp_path):
    runner = ScriptedRunner([(A, (0.995, 30)), (B, (0.999, 80))])
    out = run_search("fastest", ctx_for(runner, tmp_path), [A, B])
    assert runner.hints[1].max_latency_ms == 30
    assert out.trials[1].status == "pruned" and out.chosen.config_hash == config_hash(A)


def test_size_and_accuracy_objectives(tmp_path):
    runner = ScriptedRunner([(A, (0.995, 30)), (B, (0.999, 80))])
    out = run_search("fastest", ctx_for(runner, tmp_path, objective="accuracy"), [A, B])
    assert out.chosen.config_hash == config_hash(B)


def test_lower_is_better_metric(tmp_path):
    # e.g. an error rate of 0.10 at FP32; tolerance 5% relative -> anything <= 0.105 passes
    runner = ScriptedRunner([(A, (0.104, 50)), (B, (0.11, 10)), (C, (0.09, 70))], baseline=0.10)
    out = run_search("fastest", ctx_for(runner, tmp_path, tol=0.05, higher=False, prune=False), [A, B, C])
    assert out.chosen.config_hash == config_hash(A)
    assert {t.config_hash: t.passed for t in out.trials} == {config_hash(A): True, config_hash(B): False,
                                                             config_hash(C): True}


def test_absolute_tolerance(tmp_path):
    runner = ScriptedRunner([(A, (0.975, 50)), (B, (0.985, 60))], baseline=1.0)
    out = run_search("fastest", ctx_for(runner, tmp_path, tol=0.02, kind="absolute"), [A, B])
    assert out.chosen.config_hash == config_hash(B)
    assert out.trials[0].loss == pytest.approx(0.025)


def test_budget_max_trials(tmp_path):
    runner = ScriptedRunner([(A, (0.9, 50)), (B, (0.9, 40)), (C, (0.999, 30))])
    out = run_search("fastest", ctx_for(runner, tmp_path, max_trials=2), [A, B, C])
    assert len(runner.calls) == 2 and out.chosen is None
    assert out.closest is not None and out.closest.loss == pytest.approx(0.1)


def test_timeout_stops_new_trials(tmp_path):
    now = [0.0]

    def clock():
        now[0] += 10
        return now[0]

    runner = ScriptedRunner([(A, (0.9, 50)), (B, (0.9, 40)), (C, (0.999, 30))])
    ctx = ctx_for(runner, tmp_path, timeout=25, clock=clock)
    run_search("fastest", ctx, [A, B, C])
    assert 1 <= len(runner.calls) < 3


def test_failed_trial_is_recorded_and_search_continues(tmp_path):
    runner = ScriptedRunner([(A, (0.9, 50)), (C, (0.999, 30))], fail=[B])
    out = run_search("fastest", ctx_for(runner, tmp_path), [A, B, C])
    failed = [t for t in out.trials if t.status == "failed"]
    assert len(failed) == 1 and "backend exploded" in failed[0].error
    assert out.chosen.config_hash == config_hash(C)


def test_user_error_stops_the_search(tmp_path):
    runner = ScriptedRunner([(A, (0.9, 50))], user_error=[B])
    with pytest.raises(DataError):
        run_search("fastest", ctx_for(runner, tmp_path), [A, B, C])


def test_fallback_greedy_with_step_back(tmp_path):
    effects = {"n_bad": (-0.02, 1.0), "n_big": (0.03, 5.0), "n_small": (0.005, 1.0), "n_noop": (0.0, 1.0)}
    runner = ScriptedRunner([(A, (0.95, 50))], baseline=0.99, node_effect=effects)  # passes at >= 0.9801
    ctx = ctx_for(runner, tmp_path, tol=0.01)
    out = run_search("fallback", ctx, [A])
    assert out.chosen is not None and out.chosen.passed
    assert out.chosen.metric == pytest.approx(0.985)
    assert out.chosen.config["nodes_to_exclude"] == ["n_big", "n_small"]  # n_bad was tried and stepped back
    tried = [t.config["nodes_to_exclude"] for t in out.trials]
    assert ["n_big", "n_bad"] in tried or ["n_bad"] in tried
    assert [n["node"] for n in out.fallback_nodes] == ["n_big", "n_small"]
    assert out.fallback_nodes[0]["metric_gain"] == pytest.approx(0.03)
    assert out.fallback_nodes[0]["latency_cost_ms"] == pytest.approx(5.0)


def test_fastest_falls_back_when_nothing_passes(tmp_path):
    runner = ScriptedRunner([(A, (0.97, 50)), (B, (0.94, 40))], node_effect={"n1": (0.025, 2.0)})
    out = run_search("fastest", ctx_for(runner, tmp_path, tol=0.01), [A, B])
    assert out.chosen is not None and out.chosen.config["nodes_to_exclude"] == ["n1"]
    assert out.chosen.origin == "fallback"


def test_nothing_passes_reports_closest(tmp_path):
    runner = ScriptedRunner([(A, (0.97, 50)), (B, (0.94, 40))])
    out = run_search("fastest", ctx_for(runner, tmp_path, tol=0.01), [A, B])
    assert out.chosen is None and out.closest.config_hash == config_hash(A)
    assert out.closest.loss == pytest.approx(0.03)


def test_resume_does_not_recompute(tmp_path):
    table = [(A, (0.9, 50)), (B, (0.999, 40))]
    first = ScriptedRunner(table)
    run_search("fastest", ctx_for(first, tmp_path), [A, B])
    second = ScriptedRunner(table)
    out = run_search("fastest", ctx_for(second, tmp_path), [A, B])
    assert second.calls == [] and all(t.cached for t in out.trials)
    assert out.chosen.config_hash == config_hash(B)


def test_resume_after_sigkill_mid_search(tmp_path):
    """A search killed with SIGKILL mid-trial keeps every finished trial."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        from test_strategies import A, B, C, ScriptedRunner, ctx_for, run_search
        from pathlib import Path
        class Killer(ScriptedRunner):
            def run(self, config, hint):
                if len(self.calls) == 2:
                    os.kill(os.getpid(), signal.SIGKILL)
                return super().run(config, hint)
        runner = Killer([(A, (0.9, 50)), (B, (0.95, 40)), (C, (0.999, 30))])
        run_search("fastest", ctx_for(runner, Path({str(tmp_path)!r})), [A, B, C])
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    store = TrialStore(tmp_path / "trials.db")
    assert [t.config_hash for t in store.trials("run1")] == [config_hash(A), config_hash(B)]
    store.close()
    runner = ScriptedRunner([(A, (0.9, 50)), (B, (0.95, 40)), (C, (0.999, 30))])
    out = run_search("fastest", ctx_for(runner, tmp_path), [A, B, C])
    assert runner.calls == [config_hash(C)]
    assert out.chosen.config_hash == config_hash(C)


def test_tolerance_math_and_inc_monitor():
    rel = Tolerance("relative", 0.01, True)
    assert rel.passes(0.9645, 0.9549) and not rel.passes(0.9645, 0.9526)
    assert rel.required(0.9645) == pytest.approx(0.9645 * 0.99)
    low = Tolerance("absolute", 0.5, False)  # e.g. perplexity: lower is better
    assert low.passes(10.0, 10.5) and not low.passes(10.0, 10.6)
    for tol, base, good, bad in [(rel, 0.9645, 0.96, 0.95), (low, 10.0, 10.2, 11.0)]:
        monitor = tol.monitor(max_trials=10)
        monitor.set_baseline(base)
        assert monitor.add(0, bad, None) is False and not monitor.need_stop()
        assert monitor.add(1, good, None) is True and monitor.need_stop()
    assert Tolerance.from_spec(ToleranceSpec(type="absolute", value=0.02), True).kind == "absolute"


def test_space_expansion_via_inc():
    configs = expand_space(BASE, {"approach": ["dynamic", "static"], "per_channel": [True, False],
                                  "format": ["qdq", "qoperator"], "calibration.method": ["minmax", "entropy"]})
    hashes = [config_hash(c) for c in configs]
    assert len(hashes) == len(set(hashes))
    first = configs[0].model_dump(mode="json")
    assert first.pop("optimize") == "auto" and first == BASE.model_dump(mode="json")
    dynamic = [c for c in configs if c.approach == "dynamic"]
    static = [c for c in configs if c.approach == "static"]
    assert len(dynamic) == 2  # format and calibration mean nothing to dynamic: collapsed
    assert len(static) == 2 * 2 * 2
    assert all(c.format is None for c in dynamic)


def test_space_varies_graph_optimization():
    configs = expand_space(BASE, {"export.optimize": ["none", "transformer"], "per_channel": [True, False]},
                           optimize="extended")
    levels = sorted({c.optimize for c in configs})
    assert configs[0].optimize == "extended"  # the spec's level is the first candidate's
    assert levels == ["extended", "none", "transformer"]
    assert len(configs) == 1 + 2 * 2
    assert len({config_hash(c) for c in configs}) == len(configs)  # the level is part of the identity
    assert "optimize=transformer" in describe_config(configs[-1].model_dump(mode="json"))
    assert "optimize" not in describe_config(SearchPoint().model_dump(mode="json"))
    mixed = expand_space(BASE, {"approach": ["dynamic", "static"], "export.optimize": ["auto", "none"]})
    assert sorted((c.approach, c.optimize) for c in mixed) == [
        ("dynamic", "auto"), ("dynamic", "none"), ("static", "none")]  # static: auto resolves to none


def test_strategy_registry():
    assert STRATEGIES.names() == ["basic", "fallback", "fastest"]


def test_fastest_confirms_leading_candidates_side_by_side(tmp_path):
    class Confirming(ScriptedRunner):
        def confirm_latency(self, configs):
            self.confirmed = [config_hash(c) for c in configs]
            # A was unlucky during its trial: side by side it is the faster one (noise only ever slows)
            return {config_hash(A): 31.0, config_hash(C): 34.0}

    runner = Confirming([(A, (0.995, 40)), (B, (0.95, 10)), (C, (0.999, 35))])
    out = run_search("fastest", ctx_for(runner, tmp_path, prune=False), [A, B, C])
    assert set(runner.confirmed) == {config_hash(A), config_hash(C)}
    assert out.chosen.config_hash == config_hash(A)
    assert "confirmed p50 31.0 ms" in out.chosen.note


class AccuracyPruningRunner(ScriptedRunner):
    """Also prunes like the real runner: a candidate that cannot reach ``hint.required_metric`` gets no metric."""

    def run(self, config, hint):
        out = super().run(config, hint)
        if out.status == "ok" and hint.required_metric is not None and out.metric < hint.required_metric:
            return TrialOutcome("pruned", None, out.latency_ms, 100, note="cannot reach the tolerance")
        return out


def test_nothing_is_pruned_before_a_candidate_passes(tmp_path):
    """Failing candidates are scored in full while none passes: fallback starts from the closest one, and a
    fallback step that lowers the loss without reaching the tolerance is kept (not pruned and stepped back)."""
    effects = {"n_half": (0.012, 1.0), "n_rest": (0.012, 1.0)}
    runner = AccuracyPruningRunner([(A, (0.96, 50)), (B, (0.95, 40))], baseline=0.99, node_effect=effects)
    out = run_search("fastest", ctx_for(runner, tmp_path, tol=0.01), [A, B])  # passes at >= 0.9801
    assert [t.status for t in out.trials if t.origin == "space"] == ["ok", "ok"]
    assert all(h.required_metric is None for h in runner.hints)
    assert out.chosen is not None and out.chosen.origin == "fallback"
    assert sorted(out.chosen.config["nodes_to_exclude"]) == ["n_half", "n_rest"]  # neither passes alone
    assert len(out.fallback_nodes) == 2


def test_failing_candidates_are_pruned_once_one_passes(tmp_path):
    runner = AccuracyPruningRunner([(A, (0.999, 50)), (B, (0.9, 40))])
    out = run_search("fastest", ctx_for(runner, tmp_path, tol=0.01), [A, B])
    assert runner.hints[0].required_metric is None and runner.hints[1].required_metric == pytest.approx(0.99)
    assert out.trials[1].status == "pruned" and out.chosen.config_hash == config_hash(A)
