"""The spec section of weight-only quantization (``quantization.weight_only``, with ``approach: weight_only``):
block-wise int4/int8 weights and float activations, as ONNX Runtime's ``MatMulNBits`` runs them. Schema only; the
backend that applies it is :mod:`quantkit.backends.weight_only`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["WeightOnlySpec", "WEIGHT_ONLY_ALGORITHMS", "CALIBRATED_ALGORITHMS"]

#: algorithm → (what it is, bit widths it supports).
WEIGHT_ONLY_ALGORITHMS: dict[str, tuple[str, tuple[int, ...]]] = {
    "rtn": ("round to nearest, block-wise (ONNX Runtime's default weight-only quantizer)", (4, 8)),
    "hqq": ("half-quadratic quantization: scales and zero points optimised per block, no data (ONNX Runtime)", (4,)),
    "gptq": ("GPTQ: error-compensating rounding from calibration text (ONNX Runtime's bundled Intel Neural "
             "Compressor code)", (4,)),
    "k_quant": ("k-quant scales (llama.cpp's search for each block's scale; ONNX Runtime)", (4,)),
}
#: Algorithms that read ``data.calibration``.
CALIBRATED_ALGORITHMS = frozenset({"gptq"})

Precision = Literal["int8", "int4", "fp32"]


class WeightOnlySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    bits: Literal[4, 8] = Field(4, description="Bits per weight of the linear layers (MatMulNBits).")
    block_size: int = Field(
        32, ge=16, le=256,
        description="Weights per quantization block along the input dimension (a power of two, 16 to 256): one "
        "scale (and zero point) per block. Smaller: more accurate, larger file.",
    )
    symmetric: bool = Field(
        False, description="Symmetric blocks (no zero points): slightly smaller and faster, usually less accurate.")
    algorithm: Literal["rtn", "hqq", "gptq", "k_quant"] = Field(
        "rtn", description="How weights are rounded: " + "; ".join(f"{k}: {v[0]}" for k, v in
                                                                 WEIGHT_ONLY_ALGORITHMS.items()) + ".",
    )
    accuracy_level: Literal[0, 1, 2, 3, 4] = Field(
        4,
        description="MatMulNBits compute type: 0 = the op's default, 1 fp32, 2 fp16, 3 bf16, 4 int8 (activations "
        "quantized per block at run time; the fastest on x86 CPUs). ONNX Runtime's CPU provider has no bf16/fp16 "
        "arithmetic: 2 and 3 run as fp32.",
    )
    embeddings: Precision = Field(
        "int8", description="The token embedding table (Gather): int8 or int4 blocks (GatherBlockQuantized), or fp32. "
        "int8 by default, as peers do: it is most of a small model's bytes and sensitive.",
    )
    lm_head: Precision = Field(
        "int8", description="The output projection to the vocabulary: int8 or int4 (MatMulNBits), or fp32. int8 by "
        "default, as peers do.",
    )
    exclude: list[str] = Field(
        default_factory=list,
        description="Linear layers kept in fp32: ONNX node names or shell patterns on them (e.g. '*layers.0/*', "
        "'*down_proj*').",
    )
    calibration_windows: int = Field(
        32, ge=1, description="gptq: windows of calibration text (data.calibration, data.max_length tokens each).")

    @model_validator(mode="after")
    def _check(self) -> "WeightOnlySpec":
        if self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size: {self.block_size} is not a power of two (16, 32, 64, 128 or 256)")
        able = WEIGHT_ONLY_ALGORITHMS[self.algorithm][1]
        if self.bits not in able:
            raise ValueError(f"bits: algorithm {self.algorithm} quantizes to {' or '.join(map(str, able))} bits, not "
                             f"{self.bits}; use algorithm: rtn for {self.bits}-bit weights")
        if len(set(self.exclude)) != len(self.exclude):
            raise ValueError("exclude: patterns must not repeat")
        return self

    @property
    def needs_calibration(self) -> bool:
        return self.algorithm in CALIBRATED_ALGORITHMS

    def describe(self) -> str:
        """e.g. ``int4 rtn, block 32, asym, lm_head int8, embeddings int8``."""
        return (f"int{self.bits} {self.algorithm}, block {self.block_size}, {'sym' if self.symmetric else 'asym'}, "
                f"lm_head {self.lm_head}, embeddings {self.embeddings}")
