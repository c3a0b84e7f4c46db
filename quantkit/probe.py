"""Defaults decided by measurement: a short probe on the real exported graph, cached per CPU.

Some defaults only have a right answer on a given CPU. Today that is ``export.optimize: auto`` for
ONNX Runtime dynamic quantization of a supported encoder: the table (:func:`quantkit.fusion.resolve_level`)
says ``transformer-noskip`` (transformer fusion with SkipLayerNormalization taken apart again, measured
faster on a Xeon with ONNX Runtime 1.31). With ``hardware_probe: auto`` (the default) ``quantize`` builds
the int8 model with each level (``transformer-noskip``, ``transformer``, ``none``), times them interleaved
with the FP32 export at the spec's latency shape (:mod:`quantkit.latency`), and keeps another option only
when it is separably faster; otherwise the table's default stays (the option quantkit's accuracy checks
were made with).

Results are cached as JSON under :func:`cache_dir` (``$QUANTKIT_CACHE``, else
``$XDG_CACHE_HOME/quantkit``, else ``~/.cache/quantkit``), keyed by the CPU (model, arch and int8
ISA flags), the ONNX Runtime version, the exported model's bytes, the shape and threads, and the
quantization config, so a probe runs once per machine and model. ``hardware: <target>`` naming
another CPU keeps the table and says so: a probe here says nothing about there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .latency import (MIN_DECISION_ROUNDS, Rounds, SubprocessTimer, Timer, default_threads, done_when_separable, measure,
                      separable)
from .backends import backend_class
from .fusion import PROBED_LEVELS, resolve_level
from .hardware import cpu_info, detect_target

logger = logging.getLogger(__name__)

__all__ = ["cache_dir", "ProbeCache", "ProbeResult", "cpu_fingerprint", "model_fingerprint", "run_probe",
           "probe_fusion"]


def cache_dir() -> Path:
    """Where probe results live: ``$QUANTKIT_CACHE``, else the user's cache folder."""
    env = os.environ.get("QUANTKIT_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "quantkit"


class ProbeCache:
    """One JSON file per probe key under ``<root>/probes``."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else cache_dir()
        self.dir = self.root / "probes"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self.dir / f"{key}.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def put(self, key: str, data: dict[str, Any]) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = self.dir / f".{key}.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            tmp.replace(self.dir / f"{key}.json")
        except OSError as exc:  # a read-only cache only costs a re-probe next time
            logger.warning("cannot write the probe cache %s: %s", self.dir, exc)


def cpu_fingerprint(cpu: Any | None = None) -> dict[str, Any]:
    """The CPU part of a probe key: model name, architecture and int8-relevant ISA flags."""

    cpu = cpu or cpu_info()
    return {"model": cpu.model, "arch": cpu.arch, "flags": sorted(cpu.features)}


def model_fingerprint(path: str | Path) -> str:
    """sha256 of an ONNX file and its external-data files (same folder)."""
    path = Path(path)
    h = hashlib.sha256()
    for f in [path, *sorted(p for p in path.parent.iterdir() if p.suffix in (".data", ".onnx_data"))]:
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _ort_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("onnxruntime")
    except metadata.PackageNotFoundError:  # pragma: no cover
        return None


@dataclass
class ProbeResult:
    """What a probe measured and chose (or why it did not run)."""

    choice: str  # the setting probed, e.g. "export.optimize"
    status: str  # "measured" | "cached" | "skipped"
    default: str
    chosen: str
    reason: str
    options: list[str] = field(default_factory=list)
    #: option -> int8 option / FP32 latency ratio (median, low, high, rounds)
    vs_fp32: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: other option / default latency ratio
    vs_default: dict[str, dict[str, Any]] = field(default_factory=dict)
    key: str | None = None
    measured_on: dict[str, Any] = field(default_factory=dict)
    #: The rounds timed (this run only, never cached): the headline measurement continues from them when the
    #: chosen option is the model the run ships.
    rounds: Rounds | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "rounds"}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ProbeResult":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def run_probe(
    choice: str,
    options: Mapping[str, Callable[[], Path]],
    baseline: Path,
    *,
    default: str,
    key_parts: Mapping[str, Any],
    timer: Timer,
    max_rounds: int = 7,
    cache: ProbeCache | None = None,
) -> ProbeResult:
    """Build each option's model (``options[name]()`` → ONNX path), time them interleaved with ``baseline``
    and keep the one that is separably faster than the default, else the default. Cached by ``key_parts``."""
    key = hashlib.sha256(json.dumps({"choice": choice, "options": sorted(options), "default": default,
                                     **key_parts}, sort_keys=True, default=str).encode()).hexdigest()[:24]
    if cache is not None:
        hit = cache.get(key)
        if hit is not None:
            result = ProbeResult.from_dict(hit)
            result.status = "cached"
            logger.info("%s: %s (probe cached in %s)", choice, result.chosen, cache.dir)
            return result
    paths: dict[str, Any] = {"fp32": baseline}
    for name, build in options.items():
        paths[name] = build()
    others = [n for n in options if n != default]
    stop = (lambda r: all(done_when_separable(o, default)(r) for o in others))
    rounds = measure(paths, timer, min_rounds=MIN_DECISION_ROUNDS, max_rounds=max_rounds, done=stop,
                     what=f"hardware probe ({choice}: {', '.join(paths)})")
    vs_default = {o: rounds.ratio(o, default) for o in others}
    faster = [o for o, est in vs_default.items() if separable(est) and est.high < 1]
    if faster:
        chosen = min(faster, key=lambda o: vs_default[o].median)
        reason = f"{chosen} is separably faster than {default}: {vs_default[chosen].describe()} of its latency"
    else:
        chosen = default
        reason = (f"no option is separably faster than the default {default} ("
                  + ", ".join(f"{o}: {e.describe()}" for o, e in vs_default.items()) + "): default kept")
    result = ProbeResult(
        choice=choice, status="measured", default=default, chosen=chosen, reason=reason, options=list(options),
        vs_fp32={n: rounds.ratio(n, "fp32").to_dict() for n in options},
        vs_default={o: e.to_dict() for o, e in vs_default.items()}, key=key,
        measured_on={k: key_parts[k] for k in ("cpu", "onnxruntime", "shape") if k in key_parts}, rounds=rounds,
    )
    logger.info("%s probe: %s", choice, reason)
    if cache is not None:
        cache.put(key, result.to_dict())
    return result


def fusion_probe_default(spec: Any, model_type: str | None) -> str | None:
    """The table's ``export.optimize`` level that a probe would time alternatives against, or None when the spec
    leaves nothing to probe (it set the level; the backend does not optimize graphs; only "none" applies)."""
    config = spec.quantization
    if spec.export.optimize != "auto" or not backend_class(config.backend).optimizes_graph:
        return None
    default = resolve_level("auto", approach=config.approach, backend=config.backend, model_type=model_type)
    return None if default == "none" else default  # only dynamic int8 of a supported encoder has levels to time


def _probe_off(spec: Any) -> bool:
    """``hardware_probe: off``, or ``QUANTKIT_HARDWARE_PROBE=off`` in the environment."""
    return spec.hardware_probe == "off" or os.environ.get("QUANTKIT_HARDWARE_PROBE") == "off"


def will_probe(spec: Any, model_type: str | None) -> bool:
    """Whether a run of ``spec`` times the fusion levels on this CPU (unless a cached verdict exists)."""
    if fusion_probe_default(spec, model_type) is None or _probe_off(spec):
        return False
    return spec.hardware == "auto" or spec.hardware == detect_target(cpu_info())


def probe_fusion(
    spec: Any,
    fp32: Any,
    *,
    model_type: str | None,
    sequence_length: int | None,
    build: Callable[[str], Path],
    matches_this_cpu: bool,
    vocab_size: int = 30522,
    timer: Timer | None = None,
    cache: ProbeCache | None = None,
    cpu: Any | None = None,
) -> ProbeResult | None:
    """Probe ``export.optimize: auto`` (:data:`~quantkit.fusion.PROBED_LEVELS`) for ``spec``; ``build(level)`` quantizes
    the FP32 graph optimized at ``level`` and returns the int8 model. ``None`` when there is nothing
    to probe (the spec set the level, or only one level applies)."""

    config = spec.quantization
    default = fusion_probe_default(spec, model_type)
    if default is None:
        return None
    if _probe_off(spec):
        return ProbeResult("export.optimize", "skipped", default, default,
                           "hardware_probe: off (or QUANTKIT_HARDWARE_PROBE=off): the table decides")
    if not matches_this_cpu:
        return ProbeResult("export.optimize", "skipped", default, default,
                           f"hardware: {spec.hardware} is not this CPU: the table's default is kept (a probe here "
                           "would not say how the model runs there)")
    latency = spec.evaluation.latency
    threads = latency.threads or default_threads()
    seq = latency.sequence_length or sequence_length
    key_parts = {
        "cpu": cpu_fingerprint(cpu),
        "onnxruntime": _ort_version(),
        "model": model_fingerprint(fp32.path),
        "shape": [latency.batch_size, seq, threads],
        "quantization": config.model_dump(mode="json"),
    }
    if timer is None:
        timer = SubprocessTimer(latency, sequence_length=seq, vocab_size=vocab_size)
    options = {level: (lambda level=level: build(level)) for level in PROBED_LEVELS}
    return run_probe("export.optimize", options, Path(fp32.path), default=default, key_parts=key_parts, timer=timer,
                     max_rounds=max(latency.round_budget, MIN_DECISION_ROUNDS), cache=cache if cache is not None else ProbeCache())
