"""Issue #13: the timing rules with injected (fake) timings, and the probe cache."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from quantkit.hardware import CpuInfo
from quantkit.probe import ProbeCache, cpu_fingerprint, run_probe
from quantkit.search.space import config_hash
from quantkit.search.store import TrialStore
from quantkit.search.strategies import Measurement, SearchContext, TrialOutcome, run_search
from quantkit.search.tolerance import Tolerance
from quantkit.spec import LatencySpec, QuantizationConfig
from quantkit.latency import (
    CONFIDENCE,
    MIN_DECISION_ROUNDS,
    Rounds,
    done_when_separable,
    measure,
    rank,
    ratio_estimate,
    separable,
    side_by_side,
    speedup_warning,
)


class FakeTimer:
    """``timings[label]`` is a list of ms per round (cycled); records every call in order."""

    def __init__(self, timings):
        self.timings = {k: itertools.cycle(v) for k, v in timings.items()}
        self.calls: list[str] = []

    def __call__(self, label, path):
        self.calls.append(label)
        return next(self.timings[label])


PATHS = {"fp32": Path("fp32.onnx"), "a": Path("a.onnx"), "b": Path("b.onnx")}


# --------------------------------------------------------------------------- statistics
def test_ratio_estimate_median_and_order_statistic_interval():
    est = ratio_estimate([0.5, 0.6, 0.55, 0.9, 0.52])
    assert est.median == 0.55 and est.rounds == 5
    assert (est.low, est.high) == (0.5, 0.9)  # 5 rounds: min-max (93.75% coverage)
    est = ratio_estimate([1.0 + i / 100 for i in range(12)])
    # 12 rounds: [x_(3), x_(10)] covers the median with probability 1 - 2 P(Bin(12, .5) <= 2) = 0.961
    assert (est.low, est.high) == (1.02, 1.09)
    assert ratio_estimate([0.4]).rounds == 1


def test_separable_needs_rounds_and_an_interval_beyond_the_margin():
    assert separable(ratio_estimate([0.5, 0.52, 0.55, 0.51, 0.53]))
    assert not separable(ratio_estimate([0.5, 0.52]))  # fewer than MIN_DECISION_ROUNDS
    assert not separable(ratio_estimate([0.7, 1.2, 0.8, 0.75, 0.7]))  # interval straddles 1
    assert not separable(ratio_estimate([0.99, 0.985, 0.99, 0.99, 0.97]))  # tight, but within 2%: not worth a choice
    assert separable(ratio_estimate([1.3, 1.25, 1.4, 1.3, 1.35]))


def test_a_decision_needs_rounds_whose_interval_reaches_the_confidence():
    """3 rounds all on one side of 1 happen by chance 1 time in 4 (min–max covers the median with 75%),
    4 rounds 1 in 8: neither decides; 5 rounds (93.75% >= CONFIDENCE) do. CI once saw two 3-round tunes
    each claim 'separably faster' for opposite configs of equal speed."""
    assert CONFIDENCE == 0.90 and MIN_DECISION_ROUNDS == 5
    assert not separable(ratio_estimate([1.08, 1.34, 1.60]))
    assert not separable(ratio_estimate([1.15, 1.20, 1.40, 1.3]))
    assert separable(ratio_estimate([1.15, 1.20, 1.40, 1.3, 1.25]))
    assert "fewer than 5 rounds" in speedup_warning(ratio_estimate([0.5, 0.52, 0.55, 0.5]))


def test_rounds_are_interleaved_with_the_order_rotated():
    timer = FakeTimer({"fp32": [100], "a": [50], "b": [60]})
    out = measure(PATHS, timer, min_rounds=3)
    assert timer.calls == ["fp32", "a", "b", "a", "b", "fp32", "b", "fp32", "a"]
    assert out.rounds == 3 and out.ratio("a", "fp32").median == 0.5


def test_ratios_are_per_round_so_a_drifting_machine_cancels_out():
    # the machine slows down 3x mid-run; medians of raw ms would mislead, per-round ratios do not
    timer = FakeTimer({"fp32": [100, 300, 310, 100, 320], "a": [60, 180, 186, 60, 192]})
    out = measure({"fp32": PATHS["fp32"], "a": PATHS["a"]}, timer, min_rounds=5)
    est = out.ratio("a", "fp32")
    assert est.median == pytest.approx(0.6) and est.high == pytest.approx(0.6) and separable(est)


# --------------------------------------------------------------------------- adaptive rounds
def test_adaptive_rounds_stop_as_soon_as_separable():
    timer = FakeTimer({"fp32": [100], "a": [50]})
    out = measure({"fp32": "f", "a": "a"}, timer, min_rounds=1, max_rounds=9, done=done_when_separable("a", "fp32"))
    assert out.rounds == MIN_DECISION_ROUNDS


def test_adaptive_rounds_stop_at_the_budget_and_warn():
    latency = LatencySpec(rounds=2, max_rounds=6)
    out = side_by_side({"fp32": "f", "int8": "i"}, latency, baseline="fp32", timer=FakeTimer(
        {"fp32": [100], "int8": [70, 130, 95]}))  # noise straddling 1
    assert out.rounds.rounds == 6 and out.warnings and out.warnings[0].startswith("timings unreliable:")
    assert "faster or slower" in out.warnings[0]
    clear = side_by_side({"fp32": "f", "int8": "i"}, latency, baseline="fp32",
                         timer=FakeTimer({"fp32": [100], "int8": [50, 52, 55]}))
    assert clear.rounds.rounds == MIN_DECISION_ROUNDS and clear.warnings == [] and clear.ratios["int8"].high < 1


def test_round_budget_defaults():
    assert LatencySpec().round_budget == 7  # adaptive by default
    assert LatencySpec(rounds=1).round_budget == 1  # the user fixed the rounds
    assert LatencySpec(rounds=1, max_rounds=5).round_budget == 5


def test_speedup_warning_rules():
    assert speedup_warning(ratio_estimate([0.5, 0.55, 0.6, 0.55, 0.52])) is None
    assert "fewer than" in speedup_warning(ratio_estimate([0.5]))
    assert "varied more than" in speedup_warning(ratio_estimate([0.3, 0.5, 0.6, 0.5, 0.55]))


# --------------------------------------------------------------------------- ranking
def test_rank_separable_faster_wins():
    rounds = Rounds({"a": [50, 51, 52, 50, 51], "b": [70, 71, 69, 70, 70]})
    r = rank(rounds, ["a", "b"], accuracy={"a": 0.90, "b": 0.99})
    assert r.winner == "a" and not r.tied and "separably faster" in r.reason


def test_rank_inseparable_accuracy_then_size_wins():
    rounds = Rounds({"a": [50, 60, 52], "b": [55, 51, 58]})
    r = rank(rounds, ["a", "b"], accuracy={"a": 0.90, "b": 0.99})
    assert r.fastest == "a" and r.tied == ["b"] and r.winner == "b"
    assert "cannot separate" in r.reason and "more accurate" in r.reason
    r = rank(rounds, ["a", "b"], accuracy={"a": 0.95, "b": 0.95}, size={"a": 200, "b": 100})
    assert r.winner == "b" and "smaller" in r.reason


# --------------------------------------------------------------------------- the search with fake timings
BASE = QuantizationConfig()
A, B = BASE.model_copy(update={"per_channel": True}), BASE.model_copy(update={"per_channel": False})


class TimedRunner:
    """A trial runner whose latencies come from a FakeTimer: timed interleaved, pruned only when separable."""

    def __init__(self, metrics, timings):
        self.metrics = {config_hash(c): m for c, m in metrics}
        self.timer = FakeTimer({config_hash(c): t for c, t in timings} | {"fp32": [100]})
        self.paths = {config_hash(c): f"/m/{config_hash(c)}" for c, _ in metrics}

    def baseline(self):
        return Measurement(1.0, 100.0, 1000)

    def run(self, config, hint):
        h = config_hash(config)
        paths = {"fp32": "fp32", h: self.paths[h]}
        best = next((k for k, p in self.paths.items() if p == hint.best_model_path), None)
        if best:
            paths[best] = hint.best_model_path
        rounds = measure(paths, self.timer, min_rounds=1, max_rounds=7,
                         done=done_when_separable(h, best) if best else None)
        if best and separable(rounds.ratio(h, best)) and rounds.ratio(h, best).low > 1:
            return TrialOutcome("pruned", None, rounds.median_ms(h), 100, self.paths[h], note="separably slower")
        return TrialOutcome("ok", self.metrics[h], rounds.median_ms(h), 100, self.paths[h])

    def confirm_latency(self, configs):
        hashes = [config_hash(c) for c in configs]
        return measure({h: self.paths[h] for h in hashes}, self.timer, min_rounds=MIN_DECISION_ROUNDS)

    def sensitivity(self, config):
        return []


def _search(tmp_path, runner):
    ctx = SearchContext(runner, Tolerance("relative", 0.05, True), TrialStore(tmp_path / "t.db"), "r")
    return run_search("fastest", ctx, [A, B])


def test_search_separable_faster_wins_and_slower_is_pruned(tmp_path):
    runner = TimedRunner([(A, 0.99), (B, 0.999)], [(A, [50, 52, 51]), (B, [80, 82, 81])])
    out = _search(tmp_path, runner)
    assert out.trials[1].status == "pruned" and out.chosen.config_hash == config_hash(A)


def test_search_inseparable_no_pruning_accuracy_wins_and_says_why(tmp_path, caplog):
    # B's median is higher but its rounds overlap A's: no pruning, and the more accurate B is chosen
    runner = TimedRunner([(A, 0.97), (B, 0.999)], [(A, [50, 58, 51]), (B, [57, 49, 56])])
    with caplog.at_level("WARNING"):
        out = _search(tmp_path, runner)
    assert [t.status for t in out.trials] == ["ok", "ok"]
    assert out.chosen.config_hash == config_hash(B)
    assert "cannot separate" in out.reason and "more accurate" in out.reason
    assert out.latency_decision["tied"] and out.latency_decision["winner"] == f"trial {out.chosen.idx}"
    assert "cannot tell the leading candidates apart" in caplog.text


# --------------------------------------------------------------------------- the probe and its cache
def _cpu(model="Intel Xeon", flags=("avx2", "avx512_vnni")):
    return CpuInfo(model=model, arch="x86_64", logical_cores=2, physical_cores=2, features=list(flags))


def _probe(tmp_path, timer, cpu, built):
    def build(name):
        def f():
            built.append(name)
            return tmp_path / f"{name}.onnx"
        return f

    return run_probe("export.optimize", {"transformer": build("transformer"), "none": build("none")},
                     tmp_path / "fp32.onnx", default="transformer", timer=timer,
                     key_parts={"cpu": cpu_fingerprint(cpu), "onnxruntime": "1.x", "model": "sha", "shape": [8, 128, 2]},
                     cache=ProbeCache(tmp_path / "cache"))


def test_probe_keeps_the_separably_faster_option_and_caches_it(tmp_path):
    built: list[str] = []
    timer = FakeTimer({"fp32": [100], "transformer": [60, 61, 62], "none": [50, 51, 50]})
    first = _probe(tmp_path, timer, _cpu(), built)
    assert first.status == "measured" and first.chosen == "none" and "separably faster" in first.reason
    assert first.vs_fp32["none"]["median"] == pytest.approx(0.5)
    calls = len(timer.calls)
    again = _probe(tmp_path, timer, _cpu(), built)
    assert again.status == "cached" and again.chosen == "none" and len(timer.calls) == calls
    assert built == ["transformer", "none"]  # nothing rebuilt on the hit
    other = _probe(tmp_path, timer, _cpu(flags=("avx2",)), built)  # another CPU: probed again
    assert other.status == "measured" and len(timer.calls) > calls and other.key != first.key


def test_probe_inseparable_keeps_the_default(tmp_path):
    timer = FakeTimer({"fp32": [100], "transformer": [60, 50, 61], "none": [52, 59, 55]})
    result = _probe(tmp_path, timer, _cpu(), [])
    assert result.chosen == "transformer" and "default kept" in result.reason
    assert result.vs_default["none"]["rounds"] == 7  # rounds were added up to the budget before giving up


def test_probe_fusion_times_every_probed_level_and_keeps_the_default_unless_separably_faster(
        monkeypatch, tiny_fp32, tmp_path):
    from quantkit.fusion import PROBED_LEVELS
    from quantkit.probe import probe_fusion
    from quantkit.specio import parse_spec

    monkeypatch.delenv("QUANTKIT_HARDWARE_PROBE", raising=False)
    spec = parse_spec({"spec_version": 1, "data": {"evaluation": {"path": "x.jsonl"}}})
    assert PROBED_LEVELS[0] == "transformer-noskip" and set(PROBED_LEVELS) == {"transformer-noskip", "transformer",
                                                                                "none"}
    built: list[str] = []

    def build(level):
        built.append(level)
        return tmp_path / f"{level}.onnx"

    # measured on a Xeon with ONNX Runtime 1.31: SkipLayerNormalization fused is separably slower -> default kept
    timer = FakeTimer({"fp32": [100], "transformer-noskip": [35, 36, 35], "transformer": [46, 45, 47],
                       "none": [40, 41, 39]})
    result = probe_fusion(spec, tiny_fp32, model_type="bert", sequence_length=16, build=build,
                          matches_this_cpu=True, timer=timer, cache=ProbeCache(tmp_path / "c1"))
    assert built == list(PROBED_LEVELS) and result.default == "transformer-noskip"
    assert result.chosen == "transformer-noskip" and "default kept" in result.reason
    assert set(result.vs_default) == {"transformer", "none"}
    # a CPU where the fused kernel wins: the probe says so and takes it
    timer = FakeTimer({"fp32": [100], "transformer-noskip": [46, 45, 47], "transformer": [35, 36, 35],
                       "none": [50, 51, 49]})
    result = probe_fusion(spec, tiny_fp32, model_type="bert", sequence_length=16, build=build,
                          matches_this_cpu=True, timer=timer, cache=ProbeCache(tmp_path / "c2"))
    assert result.chosen == "transformer" and "separably faster than transformer-noskip" in result.reason


def test_probe_skipped_for_another_cpu(monkeypatch, tiny_fp32):
    from quantkit.probe import probe_fusion
    from quantkit.specio import parse_spec

    monkeypatch.delenv("QUANTKIT_HARDWARE_PROBE", raising=False)
    spec = parse_spec({"spec_version": 1, "hardware": "avx2", "data": {"evaluation": {"path": "x.jsonl"}}})
    result = probe_fusion(spec, tiny_fp32, model_type="bert", sequence_length=16, matches_this_cpu=False,
                          build=lambda level: pytest.fail("nothing is built for another CPU"))
    assert result.status == "skipped" and result.chosen == "transformer-noskip" and "not this CPU" in result.reason
    off = parse_spec({"spec_version": 1, "hardware_probe": "off", "data": {"evaluation": {"path": "x.jsonl"}}})
    result = probe_fusion(off, tiny_fp32, model_type="bert", sequence_length=16, matches_this_cpu=True,
                          build=lambda level: pytest.fail("probe is off"))
    assert result.status == "skipped" and "off" in result.reason


# --------------------------------------------------------------------------- where it lands
def test_report_card_and_cli_show_the_warning():
    from quantkit.card import model_card_text
    from quantkit.latency import add_timing, timing_warnings

    timed = side_by_side({"fp32": "f", "int8": "i"}, LatencySpec(rounds=3), baseline="fp32",
                         timer=FakeTimer({"fp32": [100], "int8": [70, 130, 95]}))
    report = add_timing({"model": {"task": "text-classification"}, "result": {}, "fp32": {}, "quantized": {}}, timed,
                        None)
    assert report["result"]["latency_ratio_p50"] == pytest.approx(0.95)
    assert report["timing"]["round_ms"]["int8"][:3] == [70.0, 130.0, 95.0]
    assert timing_warnings(report) == timed.warnings and timed.warnings
    card = model_card_text(report, "org/m")
    assert "## Timing" in card and "timings unreliable" in card and "0.95x" in card


# --------------------------------------------------------------------------- a busy CPU, for real (slow)
@pytest.mark.slow
def test_tune_under_a_busy_loop_never_claims_a_wrong_sign(tmp_path, tiny_model_dir, tiny_data_dir):
    """With busy loops pinned to our cores, what `tune` claims without a warning survives a quiet re-measurement:
    a winner it calls "separably faster" is not separably slower than the other candidate when both are re-timed
    quietly over many rounds, and an int8/FP32 speed-up's sign is not separably reversed. (Comparing two tunes'
    choices instead is itself a coin toss when the candidates run equally fast: CI saw it fail.)"""
    import os
    import subprocess
    import sys

    from conftest import write_spec

    from quantkit import Quantizer
    from quantkit.latency import timing_warnings

    def spec(name, body):
        return write_spec(tmp_path / f"{name}.yaml", f"""
spec_version: 1
{body}
data:
  evaluation: {{path: {tiny_data_dir / 'validation.jsonl'}}}
  max_length: 32
evaluation:
  metric: agreement
  latency: {{batch_size: 4, sequence_length: 32, warmup: 2, repeats: 10, rounds: 5, max_rounds: 7}}
output: {{dir: {tmp_path / name}, keep_fp32: true}}
""")

    quantizer = Quantizer.from_pretrained(tiny_model_dir)
    tune_spec = spec("noisy", """quantization: {approach: dynamic}
tuning:
  tolerance: {type: absolute, value: 0.5}
  space: {per_channel: [true, false]}
  max_trials: 2""")
    cores = sorted(os.sched_getaffinity(0))
    loop = f"import os\nos.sched_setaffinity(0, {cores!r})\nwhile True: pass"
    busy = [subprocess.Popen([sys.executable, "-c", loop]) for _ in cores]
    try:
        noisy = quantizer.tune(tune_spec, progress=False, check=False)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    tuning, report = noisy.report["tuning"], noisy.report
    quiet_latency = LatencySpec(batch_size=4, sequence_length=32, warmup=2, repeats=10, rounds=9, max_rounds=15)
    vocab = int(quantizer.loaded.config.vocab_size)
    import json

    claimed = json.dumps(tuning)
    if "separably faster" in claimed or "separably slower" in claimed:  # latency chose: re-time against the other
        other = not tuning["chosen_config"]["per_channel"]
        alt = quantizer.quantize(spec("other", f"quantization: {{approach: dynamic, per_channel: {str(other).lower()}}}"),
                                 progress=False, check=False)
        again = side_by_side({"chosen": noisy.model_path, "other": alt.model_path}, quiet_latency, baseline="chosen",
                             vocab_size=vocab)
        est = again.ratios["other"]
        assert not (separable(est) and est.high < 1), (tuning["reason"], est)
    est = report["result"]["latency_ratio"]
    if not timing_warnings(report):  # a sign was claimed: it must survive a quiet re-measurement
        assert est["high"] < 1 or est["low"] > 1
        again = side_by_side({"fp32": noisy.output_dir / "fp32" / "model.onnx", "int8": noisy.model_path},
                             quiet_latency, baseline="fp32", vocab_size=vocab)
        quiet_est = again.ratios["int8"]
        assert not (separable(quiet_est, 0.0) and (quiet_est.median < 1) != (est["high"] < 1)), (est, quiet_est)


def test_quantize_probes_on_the_real_export_then_hits_the_cache(tmp_path, monkeypatch, tiny_model_dir, tiny_data_dir):
    """`quantize` with export.optimize auto: every probed fusion level built from the export and timed (fake timer);
    the separably faster one is used and reported; the second run reads the cache; another CPU probes again."""
    from conftest import write_spec

    from quantkit import Quantizer
    from quantkit import hardware

    monkeypatch.delenv("QUANTKIT_HARDWARE_PROBE", raising=False)
    monkeypatch.setenv("QUANTKIT_CACHE", str(tmp_path / "cache"))
    spec = write_spec(tmp_path / "s.yaml", f"""
spec_version: 1
quantization: {{approach: dynamic}}
data:
  evaluation: {{path: {tiny_data_dir / 'validation.jsonl'}}}
  max_length: 16
evaluation:
  metric: agreement
  latency: {{batch_size: 2, sequence_length: 16, rounds: 5}}
""")
    q = Quantizer.from_pretrained(tiny_model_dir)
    timer = FakeTimer({"fp32": [100], "transformer-noskip": [60, 62, 61], "transformer": [60, 62, 61],
                       "none": [50, 51, 52], "int8": [50, 52, 51]})
    first = q.quantize(spec, tmp_path / "a", progress=False, check=False, timer=timer).report
    assert first["probe"]["status"] == "measured" and first["probe"]["chosen"] == "none"
    assert first["quantization"]["optimization"]["level"] == "none"
    # the shipped model is the probe's "none" build: the headline continues from the probe's 5 rounds (one more)
    assert timer.calls.count("int8") == 1 and first["timing"]["rounds"] == 6
    assert first["result"]["latency_ratio"]["median"] == pytest.approx((0.50 * 0.51) ** 0.5)
    assert not first["timing"]["warnings"]
    calls = len(timer.calls)
    second = q.quantize(spec, tmp_path / "b", progress=False, check=False, timer=timer).report
    assert second["probe"]["status"] == "cached" and second["probe"]["key"] == first["probe"]["key"]
    assert not any(c in ("transformer-noskip", "transformer", "none") for c in timer.calls[calls:])
    other = hardware.CpuInfo(model="Other CPU", arch="x86_64", logical_cores=2, physical_cores=2,
                             features=["avx2"])
    monkeypatch.setattr(hardware, "cpu_info", lambda: other)
    third = q.quantize(spec, tmp_path / "c", progress=False, check=False, timer=timer).report
    assert third["probe"]["status"] == "measured", third["probe"]
    assert third["probe"]["key"] != first["probe"]["key"]


def test_busy_cpu_makes_timings_unreliable():
    """A round timed while other threads competed for the cores warns, whatever the ratios say (a busy loop can
    slow one model more than the other in every round)."""
    from types import SimpleNamespace

    from quantkit.latency import busy_warning

    quiet = SimpleNamespace(busy_fraction=0.0, runnable=2, cores=2)
    busy = SimpleNamespace(busy_fraction=0.9, runnable=4, cores=2)
    assert busy_warning({"fp32": [quiet, quiet], "int8": [quiet]}) is None
    w = busy_warning({"fp32": [quiet, busy], "int8": [quiet]})
    assert w.startswith("timings unreliable:") and "4 runnable threads on 2 cores" in w


def test_probe_records_cpu_contention(tiny_fp32):
    """The fresh-process probe samples the machine's runnable threads while it times; a quiet probe is not busy."""
    from quantkit.latency import measure_once

    stats = measure_once(tiny_fp32.path, LatencySpec(batch_size=2, sequence_length=16, warmup=1, repeats=8,
                                                     threads=1), vocab_size=100)
    assert stats.cores >= 1 and 0.0 <= stats.busy_fraction <= 1.0


def test_confirming_the_leaders_gets_more_rounds_than_a_trial():
    """A tune recipe times each trial in 3 rounds (`rounds: 3`: exactly 3); the final side-by-side of the
    leaders may add rounds up to CONFIRM_ROUNDS (7) until the fastest is separable; `max_rounds` caps both."""
    from quantkit.search.runner import CONFIRM_ROUNDS, OnnxTrialRunner

    a, b = QuantizationConfig(approach="dynamic"), QuantizationConfig(approach="dynamic", weights_only_matmul=True)
    assert config_hash(a) != config_hash(b)
    runner = object.__new__(OnnxTrialRunner)  # only the timing parts are exercised
    runner.quantize = lambda config: Path(f"/m/{config_hash(config)}.onnx")
    # overlapping rounds: never separable, so the confirmation spends its whole budget
    runner.timer = FakeTimer({config_hash(a): [50, 58, 51], config_hash(b): [57, 49, 56]})
    runner.latency = LatencySpec(rounds=3)
    assert runner.latency.round_budget == 3 and CONFIRM_ROUNDS == 7
    assert runner.confirm_latency([a, b]).rounds == 7
    runner.timer = FakeTimer({config_hash(a): [50, 58, 51], config_hash(b): [57, 49, 56]})
    runner.latency = LatencySpec(rounds=3, max_rounds=4)
    assert runner.confirm_latency([a, b]).rounds == 4
    # separable from the start: stops at the fewest rounds that decide
    runner.timer = FakeTimer({config_hash(a): [50, 51, 50], config_hash(b): [80, 81, 80]})
    runner.latency = LatencySpec(rounds=3)
    assert runner.confirm_latency([a, b]).rounds == MIN_DECISION_ROUNDS
