"""The search space: a base :class:`QuantizationConfig` plus lists of values to try.

Expansion uses Intel Neural Compressor's own config machinery: quantkit registers
:class:`QuantkitSearchConfig` with ``register_config`` and lets INC's
``ConfigSet``/``BaseConfig.expand`` build the cartesian product, exactly as INC
does for its PyTorch configs. Each expanded point becomes a validated
``QuantizationConfig``; combinations that cannot exist (e.g. a QDQ *format* for a
*dynamic* approach) are normalised and de-duplicated by their hash.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, List

from pydantic import ValidationError

from ..logs import quiet
from pydantic import Field

from ..backends import backend_class
from ..resolve import config_issues
from ..spec import OptimizeLevel, QuantizationConfig, searchable_fields

logger = logging.getLogger(__name__)

__all__ = ["config_hash", "expand_space", "QuantkitSearchConfig", "SearchPoint", "STATIC_ONLY_FIELDS"]


class SearchPoint(QuantizationConfig):
    """A search candidate: a quantization config plus the graph optimization (``export.optimize``)
    of the FP32 model it is quantized from."""

    optimize: OptimizeLevel = Field("auto", description="export.optimize for this candidate.")

#: Fields that mean nothing to dynamic quantization (dropped from dynamic candidates).
STATIC_ONLY_FIELDS = ("format", "symmetric_activations", "activation_type")


def _param_name(key: str) -> str:
    return key.replace(".", "__")


def _make_inc_config_class() -> type:
    from neural_compressor.common.base_config import BaseConfig, register_config
    from neural_compressor.common.tuning_param import TuningParam

    fields = searchable_fields()

    @register_config(framework_name="quantkit_onnxruntime", algo_name="quantkit_search", priority=0)
    class QuantkitSearchConfig(BaseConfig):
        """INC view of a quantkit search point; every searchable field is a tunable parameter."""

        name = "quantkit_search"
        params_list = [TuningParam(_param_name(k), tunable_type=List[ann]) for k, ann in fields.items()]

        def __init__(self, white_list: Any = None, **values: Any) -> None:
            super().__init__(white_list=white_list)
            for key in fields:
                setattr(self, _param_name(key), values.get(_param_name(key)))

        def values(self) -> dict[str, Any]:
            """The set fields, with dotted spec keys."""
            return {k: getattr(self, _param_name(k)) for k in fields if getattr(self, _param_name(k)) is not None}

        @classmethod
        def register_supported_configs(cls) -> None:  # pragma: no cover - INC hook, unused by quantkit
            return None

        @classmethod
        def get_config_set_for_tuning(cls) -> None:  # pragma: no cover - INC hook, unused by quantkit
            return None

    return QuantkitSearchConfig


_INC_CLASS: type | None = None


def QuantkitSearchConfig(**values: Any) -> Any:  # noqa: N802 - factory standing in for the lazily built class
    """Build the INC config (the class is created and registered on first use: INC is heavy to import)."""
    global _INC_CLASS
    if _INC_CLASS is None:
        _INC_CLASS = _make_inc_config_class()
    return _INC_CLASS(**{_param_name(k): v for k, v in values.items()})


def config_hash(config: QuantizationConfig) -> str:
    """Stable short hash of a config (sorted JSON)."""
    text = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _apply(base: QuantizationConfig, values: dict[str, Any]) -> QuantizationConfig:
    data = base.model_dump(mode="json")
    for key, value in values.items():
        if key == "export.optimize":
            data["optimize"] = value
        elif key.startswith("calibration."):
            data["calibration"][key.split(".", 1)[1]] = value
        elif key.startswith("weight_only."):
            data["weight_only"] = {**(data.get("weight_only") or {}), key.split(".", 1)[1]: value}
        else:
            data[key] = value
    if data.get("approach") != "weight_only":
        data["weight_only"] = None  # weight-only settings mean nothing to the other approaches
    if data.get("approach") == "dynamic":
        for key in STATIC_ONLY_FIELDS:
            data[key] = None if key != "activation_type" else "uint8"
        data["calibration"] = base.calibration.model_dump(mode="json")  # unused by dynamic: keep one variant
    if data.get("optimize") == "auto" and not (data.get("approach") == "dynamic" and backend_class(data["backend"]).optimizes_graph):
        data["optimize"] = "none"  # what auto resolves to there (quantkit.fusion.resolve_level): one candidate, not two
    return type(base).model_validate(data)


def expand_space(
    base: QuantizationConfig, space: dict[str, list[Any]], *, optimize: str = "auto"
) -> list[QuantizationConfig]:
    """The base config first, then every distinct valid point of ``space`` in INC's expansion order.

    Candidates are :class:`SearchPoint` objects carrying their ``export.optimize`` level (the
    spec's ``optimize`` unless the space varies it).
    """
    from neural_compressor.common.base_tuning import ConfigSet

    if not isinstance(base, SearchPoint):
        base = SearchPoint.model_validate({**base.model_dump(mode="json", exclude_unset=True),
                                           "backend": base.backend, "optimize": optimize})
    # the base normalised as every expanded point is (e.g. optimize auto -> none where auto means none), so the same
    # model is not tried twice under two names
    candidates: list[QuantizationConfig] = [_apply(base, {})]
    if space:
        inc_config = QuantkitSearchConfig(**space)
        with quiet():  # INC logs every expanded config at INFO
            points = ConfigSet.from_fwk_configs(inc_config).config_list
        for point in points:
            try:
                candidate = _apply(base, point.values())
            except ValidationError as exc:
                logger.info("skipping impossible combination %s: %s", point.values(), exc.errors()[0]["msg"])
                continue
            if issues := config_issues(candidate):  # what its backend cannot run (quantkit.resolve)
                logger.info("skipping impossible combination %s: %s", point.values(), issues[0][1])
                continue
            candidates.append(candidate)
    seen: set[str] = set()
    unique = []
    for config in candidates:
        h = config_hash(config)
        if h not in seen:
            seen.add(h)
            unique.append(config)
    return unique
