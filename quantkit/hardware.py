"""What CPU this is: model name, core counts and the instruction-set features
that decide how int8 inference performs (VNNI, AVX-512, AMX, ...)."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

__all__ = ["CpuInfo", "cpu_info", "INT8_FEATURES"]

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
)


@dataclass(frozen=True)
class CpuInfo:
    model: str
    arch: str
    logical_cores: int
    physical_cores: int | None
    features: list[str] = field(default_factory=list)

    @property
    def has_vnni(self) -> bool:
        return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(self.features))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["has_vnni"] = self.has_vnni
        return data


@lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model", "Hardware") and model in ("unknown", "", platform.machine()):
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:  # pragma: no cover
        physical = None
    return CpuInfo(
        model=model or "unknown",
        arch=platform.machine(),
        logical_cores=os.cpu_count() or 1,
        physical_cores=physical,
        features=[f for f in INT8_FEATURES if f in flags],
    )
