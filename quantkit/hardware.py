"""The CPU quantkit runs on, and the int8 defaults that suit it.

Detection reads ``/proc/cpuinfo`` (x86 ``flags``, arm64 ``Features``) and the sysfs cache
topology. A *target* (``hardware:`` in the spec; ``auto`` = this CPU) decides the settings
the user left unset:

=============  ======================  ============  ==========================================
target         weights × activations   reduce_range  why
=============  ======================  ============  ==========================================
avx512_vnni,   int8 × uint8 (U8S8)     no            VNNI's ``vpdpbusd`` multiplies u8 × s8 into
avx_vnni, amx                                        int32 without saturating
avx2, avx512   int8 × uint8 (U8S8)     yes           without VNNI, U8S8 runs on ``vpmaddubsw``,
                                                     whose int16 pair sums can saturate
                                                     (onnxruntime#5644); 7-bit weights cannot.
                                                     U8U8 avoids it too but measured 18% slower
                                                     (MiniLM b8×128, 1 thread, AVX2)
arm64          int8 × int8 (S8S8)      no            ``sdot``/``smmla`` are signed
=============  ======================  ============  ==========================================

Static models are QDQ everywhere (ONNX Runtime fuses QDQ into integer kernels on every CPU
execution provider), per-channel weights everywhere. Before calibration quantkit warns when
int8 is unlikely to beat FP32 on the target (static int8 without VNNI: onnxruntime#17389).
"""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from .backends import backend_class

logger = logging.getLogger(__name__)

__all__ = [
    "CpuInfo",
    "cpu_info",
    "parse_cpu_info",
    "INT8_FEATURES",
    "TARGETS",
    "HardwareProfile",
    "detect_target",
    "hardware_profile",
    "resolve_quantization",
]

#: /proc/cpuinfo flags that matter for int8/bf16 inference, in report order.
INT8_FEATURES = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimddp",  # arm64 dotprod
    "i8mm",
    "bf16",  # arm64
)

#: Targets the ``hardware:`` spec field accepts besides ``auto``.
TARGETS = ("avx2", "avx512", "avx512_vnni", "avx_vnni", "amx", "arm64")


@dataclass(frozen=True)
class CpuInfo:
    """What the CPU is and which int8-relevant instructions it has."""

    model: str
    arch: str
    logical_cores: int
    physical_cores: int | None
    features: list[str] = field(default_factory=list)
    #: ``{"L1d": bytes, "L2": bytes, "L3": bytes}`` per instance, where sysfs tells.
    caches: dict[str, int] = field(default_factory=dict)

    @property
    def has_vnni(self) -> bool:
        return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(self.features))

    @property
    def is_arm(self) -> bool:
        return self.arch.lower() in ("aarch64", "arm64")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["has_vnni"] = self.has_vnni
        data["target"] = detect_target(self)
        return data


def _caches(root: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> dict[str, int]:
    out: dict[str, int] = {}
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    try:
        for index in sorted(root.glob("index*")):
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
            name = f"L{level}" + ({"Data": "d", "Instruction": "i"}.get(kind, ""))
            value = int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)
            out[name] = value
    except (OSError, ValueError):
        pass
    return out


def parse_cpu_info(text: str, arch: str | None = None) -> tuple[str, set[str]]:
    """(model name, feature flags) from the text of ``/proc/cpuinfo``."""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "Hardware", "CPU part") and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model, flags


@lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """This machine's CPU (cached)."""
    model, flags = "", set()
    try:
        model, flags = parse_cpu_info(Path("/proc/cpuinfo").read_text(encoding="utf-8"))
    except OSError:
        pass
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:  # pragma: no cover
        physical = None
    return CpuInfo(
        model=model or platform.processor() or "unknown",
        arch=platform.machine(),
        logical_cores=os.cpu_count() or 1,
        physical_cores=physical,
        features=[f for f in INT8_FEATURES if f in flags],
        caches=_caches(),
    )


def detect_target(cpu: CpuInfo) -> str:
    """The best :data:`TARGETS` entry this CPU can run (``generic`` when none fits)."""
    f = set(cpu.features)
    if cpu.is_arm:
        return "arm64"
    if "amx_int8" in f:
        return "amx"
    if "avx512_vnni" in f:
        return "avx512_vnni"
    if "avx_vnni" in f:
        return "avx_vnni"
    if "avx512f" in f and "avx512bw" in f:
        return "avx512"
    if "avx2" in f:
        return "avx2"
    return "generic"


@dataclass(frozen=True)
class HardwareProfile:
    """A target and the quantization defaults chosen for it."""

    target: str
    #: "spec" when ``hardware:`` named the target, "detected" for ``auto``.
    source: str
    cpu: CpuInfo
    #: Unset QuantizationConfig fields → value for this target.
    defaults: dict[str, Any]
    reasons: dict[str, str]

    @property
    def vnni(self) -> bool:
        return self.target in ("avx512_vnni", "avx_vnni", "amx")

    @property
    def matches_this_cpu(self) -> bool:
        """Whether latency measured here says something about the target."""
        here = detect_target(self.cpu)
        order = ["generic", "avx2", "avx512", "avx_vnni", "avx512_vnni", "amx"]
        if self.target == "arm64" or here == "arm64":
            return self.target == here
        return order.index(here) >= order.index(self.target) if self.target in order else False

    def int8_outlook(self, approach: str) -> str | None:
        """A warning when int8 is unlikely to beat FP32 on the target, else None."""
        if self.target == "generic":
            return (
                "this CPU has no AVX2: ONNX Runtime's int8 kernels fall back to SSE and int8 is unlikely to beat FP32"
            )
        if approach == "static" and not self.vnni and self.target != "arm64":
            return (
                f"static int8 on {self.target} without VNNI is often no faster than FP32 "
                "(onnxruntime#17389): the QDQ pairs add work the int8 GEMMs do not win back; "
                "approach: dynamic is usually faster here"
            )
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "source": self.source,
            "detected_target": detect_target(self.cpu),
            "cpu": self.cpu.to_dict(),
            "defaults": dict(self.defaults),
            "reasons": dict(self.reasons),
        }


def _target_defaults(target: str) -> tuple[dict[str, Any], dict[str, str]]:
    if target in ("avx512_vnni", "avx_vnni", "amx"):
        why = f"{target} has VNNI: u8 x s8 dot products accumulate in int32 without saturation"
        return (
            {"weight_type": "int8", "activation_type": "uint8", "reduce_range": False, "per_channel": True,
             "format": "qdq"},
            {"weight_type": why, "activation_type": why, "reduce_range": "no saturation to avoid",
             "per_channel": "per-channel scales cost nothing at run time", "format": "QDQ is fused by ORT"},
        )
    if target == "arm64":
        why = "arm64 dot-product instructions (sdot/smmla) are signed"
        return (
            {"weight_type": "int8", "activation_type": "int8", "reduce_range": False, "per_channel": True,
             "format": "qdq"},
            {"weight_type": why, "activation_type": why + " (static; dynamic is always uint8)",
             "reduce_range": "no saturation to avoid", "per_channel": "per-channel scales cost nothing at run time",
             "format": "QDQ is fused by ORT"},
        )
    why = (f"{target} has no VNNI: u8 x s8 runs on vpmaddubsw, the fastest int8 path here "
           "(u8 x u8 measured 18% slower on AVX2)")
    return (
        {"weight_type": "int8", "activation_type": "uint8", "reduce_range": True, "per_channel": True,
         "format": "qdq"},
        {"weight_type": why, "activation_type": why,
         "reduce_range": "7-bit weights keep vpmaddubsw's int16 pair sums from saturating (onnxruntime#5644)",
         "per_channel": "per-channel scales cost nothing at run time", "format": "QDQ is fused by ORT"},
    )


def hardware_profile(target: str = "auto", cpu: CpuInfo | None = None) -> HardwareProfile:
    """The profile for ``target`` (``auto``: this CPU's best target)."""
    cpu = cpu or cpu_info()
    source = "detected" if target == "auto" else "spec"
    resolved = detect_target(cpu) if target == "auto" else target
    if resolved not in (*TARGETS, "generic"):
        raise ValueError(f"unknown hardware target {target!r}; expected auto or one of {', '.join(TARGETS)}")
    defaults, reasons = _target_defaults(resolved)
    return HardwareProfile(resolved, source, cpu, defaults, reasons)


def resolve_quantization(config: Any, profile: HardwareProfile) -> tuple[Any, dict[str, Any]]:
    """Fill the fields of ``config`` (a QuantizationConfig) the user did not set.

    Returns the new config and ``{field: value}`` of what was chosen. Only fields that mean
    something for the config's approach are touched: dynamic activations are always uint8, ``format``
    is static-only, and a backend with a fixed scheme (``takes_hardware_defaults`` false) takes none.
    """
    if not backend_class(config.backend).takes_hardware_defaults or config.approach == "weight_only":
        return config, {}  # a fixed scheme; weight-only settings are its own section
    chosen: dict[str, Any] = {}
    for key, value in profile.defaults.items():
        if key in config.model_fields_set:
            continue
        if key in ("activation_type", "format") and config.approach != "static":
            continue
        if getattr(config, key) != value:
            chosen[key] = value
    if not chosen:
        return config, {}
    data = config.model_dump(mode="json", exclude_unset=True)
    data.update(chosen)
    data.setdefault("backend", config.backend)
    new = type(config).model_validate(data)
    logger.info("hardware %s (%s): %s", profile.target, profile.source,
                ", ".join(f"{k}={v}" for k, v in chosen.items()))
    return new, chosen
