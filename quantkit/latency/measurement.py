"""One measurement: a model timed once in a fresh process, and its record (:class:`RuntimeStats`).

Latency and peak memory are measured in a fresh subprocess per model and round
(``python -m quantkit.latency``, see :func:`probe`), so one model's allocations and thread pools never
colour another's numbers. While it times, the child samples how many threads are runnable machine-wide
(*busy-CPU detection*): :func:`busy_warning` turns a busy round into a "timings unreliable" warning.

:class:`SubprocessTimer` is the real :class:`~quantkit.latency.comparison.Timer`: one such measurement per call.
:class:`SessionTimer` keeps sessions in this process instead, for the many cells of a shape grid.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import EvaluationError
from ..feeds import carried_cache, complete_feeds, fillable

if TYPE_CHECKING:
    from ..spec import LatencySpec

__all__ = [
    "RuntimeStats",
    "SessionTimer",
    "SubprocessTimer",
    "busy_warning",
    "cpu_session",
    "default_threads",
    "measure_once",
    "measure_runtime",
    "measure_side_by_side",
    "probe",
    "procs_running",
]

#: The module ``python -m`` runs in the child process (its ``__main__`` calls :func:`probe`).
PROBE_MODULE = "quantkit.latency"


def default_threads() -> int:
    """Physical cores available to this process (ONNX Runtime's own default)."""
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:  # pragma: no cover
        physical = None
    avail = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(physical or avail, avail))


@dataclass
class RuntimeStats:
    """Latency (ms), throughput and memory of one model at one input shape: one measurement's record.

    The same record is a report's ``latency`` section (:meth:`to_dict`), a benchmark row's measurement and
    what :class:`SubprocessTimer` keeps per round.
    """

    batch_size: int
    sequence_length: int
    threads: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput: float  # examples per second at p50
    load_s: float
    peak_rss_mb: float
    model_rss_mb: float  # peak RSS minus the process's RSS before loading the model
    #: Fraction of samples during the timed runs with more runnable threads machine-wide than cores (other work
    #: competing for the CPU), the median runnable count, and the cores this process may use. They describe the
    #: conditions of the measurement, not its value: two records with the same numbers compare equal.
    busy_fraction: float = field(default=0.0, compare=False)
    runnable: float = field(default=0.0, compare=False)
    cores: int = field(default=0, compare=False)
    #: > 0: each timed run was one decode step after a prefill of ``sequence_length`` tokens (``throughput`` is
    #: then new tokens per second); 0: each run was one forward pass over the whole input.
    decode_steps: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cpu_session(path: str | Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session with ``threads`` intra-op threads (default: physical cores) and one inter-op
    thread: how quantkit runs every model it times or evaluates."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def synthetic_feeds(session: Any, batch: int, seq: int, vocab: int) -> dict[str, np.ndarray]:
    """Inputs of the timed runs: random token ids (seed 0, above the special tokens), full attention masks."""
    rng = np.random.default_rng(0)
    feeds: dict[str, np.ndarray] = {}
    for inp in session.get_inputs():
        if inp.name == "input_ids":
            feeds[inp.name] = rng.integers(1000 if vocab > 2000 else 1, vocab, size=(batch, seq), dtype=np.int64)
        elif inp.name == "token_type_ids":
            feeds[inp.name] = np.zeros((batch, seq), dtype=np.int64)
        elif not fillable(inp.name):
            feeds[inp.name] = np.ones((batch, seq), dtype=np.int64)
    return complete_feeds(session.get_inputs(), feeds)


def decode_steps(session: Any, feeds: dict[str, np.ndarray], steps: int) -> Any:
    """A decoder's token-by-token steps after a prefill of ``feeds``: yields ``(step feeds, run)``, where ``run()``
    runs that step and carries its cache into the next (one new token per row, the cache growing by one)."""
    names = [o.name for o in session.get_outputs()]
    outs = dict(zip(names, session.run(None, feeds)))
    batch, total = feeds["input_ids"].shape
    token = np.argmax(outs["logits"][:, -1], axis=-1).astype(np.int64)[:, None]
    for _ in range(steps):
        total += 1
        step = {"input_ids": token, "attention_mask": np.ones((batch, total), np.int64),
                "position_ids": np.full((batch, 1), total - 1, np.int64),
                **carried_cache(outs)}
        step = {k: v for k, v in step.items() if k in feeds}

        def run(step: dict[str, np.ndarray] = step) -> None:
            nonlocal outs, token
            outs = dict(zip(names, session.run(None, step)))
            token = np.argmax(outs["logits"][:, -1], axis=-1).astype(np.int64)[:, None]

        yield step, run


def probe(path: str, batch: int, seq: int, threads: int, warmup: int, repeats: int, vocab: int,
          decode: int = 0) -> dict[str, Any]:
    """Runs in the child process: load, warm up, time, and read peak RSS; a :class:`RuntimeStats` as a dict.

    ``decode`` > 0 (a decoder with a KV cache): after an untimed prefill of ``seq`` tokens, ``warmup`` untimed then
    ``decode`` timed steps of one new token each (the cache grows by one per step); each step is one timed run."""

    def status_mb(name: str) -> float:
        # VmHWM/VmRSS belong to this process image (ru_maxrss would include the parent's peak,
        # which Linux carries across fork and exec).
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def rss_mb() -> float:
        return status_mb("VmRSS")

    before = rss_mb()
    start = time.perf_counter()
    session = cpu_session(path, threads)
    load_s = time.perf_counter() - start
    feeds = synthetic_feeds(session, batch, seq, vocab)
    if decode:
        steps = decode_steps(session, feeds, warmup + decode)
        for _ in range(warmup):
            next(steps)[1]()
        runs: Any = (run for _, run in steps)  # lazy: each step's feeds hold the cache the previous step made
        repeats = decode
    else:
        for _ in range(warmup):
            session.run(None, feeds)
        runs = [lambda: session.run(None, feeds)] * repeats
    times = []
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    runnable: list[int] = []
    for i, run in enumerate(runs):
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) * 1000)
        if i % max(repeats // 8, 1) == 0:
            runnable.append(procs_running())
    peak = status_mb("VmHWM")
    # other work on our cores: more runnable threads than cores while ours (at most `threads`) were timed
    busy = [r > max(cores, threads) for r in runnable if r >= 0]
    arr = np.asarray(times)
    return {
        "batch_size": batch,
        "sequence_length": seq,
        "threads": threads,
        "p50_ms": float(np.percentile(arr, 50)),
        "p90_ms": float(np.percentile(arr, 90)),
        "p99_ms": float(np.percentile(arr, 99)),
        "mean_ms": float(arr.mean()),
        "throughput": float(batch / (np.percentile(arr, 50) / 1000)),
        "load_s": load_s,
        "peak_rss_mb": float(peak),
        "model_rss_mb": float(max(peak - before, 0.0)),
        "busy_fraction": float(np.mean(busy)) if busy else 0.0,
        "runnable": float(np.median([r for r in runnable if r >= 0])) if busy else 0.0,
        "cores": cores,
        "decode_steps": decode,
    }


def procs_running() -> int:
    """Linux: threads runnable right now, machine-wide (/proc/stat ``procs_running``, ours included); -1 elsewhere."""
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("procs_running"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def measure_once(
    path: str | Path, latency: LatencySpec, *, sequence_length: int | None = None, vocab_size: int = 30522,
    decode: int = 0,
) -> RuntimeStats:
    """Measure latency percentiles, load time and peak memory of ``path`` in a subprocess.

    The shape is ``latency.batch_size`` × (``latency.sequence_length`` or ``sequence_length``); ``decode`` > 0 times
    that many one-token decode steps after it instead (:func:`probe`).
    """
    threads = latency.threads or default_threads()
    seq = latency.sequence_length or sequence_length
    if seq is None:
        raise EvaluationError("latency measurement needs a sequence length")
    args = [
        str(path),
        str(latency.batch_size),
        str(seq),
        str(threads),
        str(latency.warmup),
        str(latency.repeats),
        str(vocab_size),
        str(decode),
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    proc = subprocess.run(
        [sys.executable, "-m", PROBE_MODULE, *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise EvaluationError(f"latency probe of {path} failed: {proc.stderr.strip()[-2000:]}")
    try:
        return RuntimeStats(**json.loads(proc.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError, TypeError) as exc:
        raise EvaluationError(f"latency probe of {path} printed no result: {proc.stdout[-500:]}") from exc


def measure_side_by_side(
    paths: dict[str, str | Path], latency: LatencySpec, *, sequence_length: int | None = None,
    vocab_size: int = 30522,
) -> dict[str, RuntimeStats]:
    """Time several models in interleaved rounds (A B A B ...); each keeps its best-p50 round."""
    best: dict[str, RuntimeStats] = {}
    for _ in range(latency.rounds):
        for label, path in paths.items():
            stats = measure_once(path, latency, sequence_length=sequence_length, vocab_size=vocab_size)
            if label not in best or stats.p50_ms < best[label].p50_ms:
                best[label] = stats
    return best


def measure_runtime(
    path: str | Path, latency: LatencySpec, *, sequence_length: int | None = None, vocab_size: int = 30522
) -> RuntimeStats:
    """Latency, load time and peak memory of one model: the best of ``latency.rounds`` fresh-process rounds."""
    return measure_side_by_side({"m": path}, latency, sequence_length=sequence_length, vocab_size=vocab_size)["m"]


class SubprocessTimer:
    """The real timer: one fresh-process measurement (:func:`measure_once`) per call.

    Keeps every round's :class:`RuntimeStats` in :attr:`stats` for the report.
    """

    def __init__(self, latency: Any, *, sequence_length: int | None = None, vocab_size: int = 30522,
                 decode: int = 0) -> None:
        self.latency = latency
        self.sequence_length = sequence_length
        self.vocab_size = vocab_size
        self.decode = decode
        self.stats: dict[str, list[RuntimeStats]] = {}

    def __call__(self, label: str, path: Path) -> float:
        st = measure_once(path, self.latency, sequence_length=self.sequence_length, vocab_size=self.vocab_size,
                          decode=self.decode)
        self.stats.setdefault(label, []).append(st)
        return st.p50_ms

    def median_stats(self, label: str) -> RuntimeStats:
        """The round whose p50 is the (lower) median of ``label``'s rounds: its full stats."""
        rounds = sorted(self.stats[label], key=lambda s: s.p50_ms)
        return rounds[(len(rounds) - 1) // 2]


class SessionTimer:
    """A cheaper timer for many shapes of the same models: one ONNX Runtime session per model in *this*
    process, kept across calls; each call warms up and times ``repeats`` runs at this timer's shape and returns
    the p50. Interleaving and per-round ratios still apply (:func:`~quantkit.latency.comparison.measure`); what
    is given up is the fresh process per round, so its ratios are indicative (the shape grid's), not the
    headline figure."""

    def __init__(self, *, batch_size: int, sequence_length: int, threads: int | None = None, warmup: int = 2,
                 repeats: int = 10, vocab_size: int = 30522, sessions: dict[str, Any] | None = None) -> None:
        self.batch_size, self.sequence_length = batch_size, sequence_length
        self.threads = threads or default_threads()
        self.warmup, self.repeats, self.vocab_size = warmup, repeats, vocab_size
        #: path -> InferenceSession (:func:`cpu_session`), shareable between timers of several shapes and with
        #: sessions already open for evaluation.
        self.sessions = sessions if sessions is not None else {}
        self._feeds: dict[str, dict[str, np.ndarray]] = {}

    def __call__(self, label: str, path: Path) -> float:
        key = str(path)
        if key not in self.sessions:
            self.sessions[key] = cpu_session(key, self.threads)
        session = self.sessions[key]
        if key not in self._feeds:  # the same inputs every round
            self._feeds[key] = synthetic_feeds(session, self.batch_size, self.sequence_length, self.vocab_size)
        feeds = self._feeds[key]
        for _ in range(self.warmup):
            session.run(None, feeds)
        times = []
        for _ in range(self.repeats):
            t = time.perf_counter()
            session.run(None, feeds)
            times.append((time.perf_counter() - t) * 1000)
        return float(np.percentile(times, 50))


def busy_warning(stats: Mapping[str, Sequence[Any]], threshold: float = 0.5) -> str | None:
    """"timings unreliable: ..." when other work competed for the CPU in most samples of some timed round: a
    busy machine can bias one model more than another in every round, which round-to-round spread cannot show."""
    worst = max((s for rounds in stats.values() for s in rounds), default=None,
                key=lambda s: getattr(s, "busy_fraction", 0.0))
    if worst is None or getattr(worst, "busy_fraction", 0.0) < threshold:
        return None
    return (f"timings unreliable: the CPU was busy with other work while timing ({worst.runnable:.0f} runnable threads "
            f"on {worst.cores} cores in {worst.busy_fraction:.0%} of samples); rerun on a quiet machine")
