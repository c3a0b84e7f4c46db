"""Weight-only quantization of an ONNX decoder with ONNX Runtime's ``MatMulNBitsQuantizer`` (``approach:
weight_only`` of the onnxruntime backend; settings: :class:`quantkit.spec_weights.WeightOnlySpec`).

Three groups of weights, each at its own precision, as peers do (onnxruntime-genai's builder, llama.cpp):

- the linear layers of the blocks: ``bits`` with ``algorithm`` (RTN, HQQ, GPTQ on calibration text, k-quant),
  as ``MatMulNBits`` with ``accuracy_level``; ``exclude`` keeps matching nodes in fp32;
- the LM head (the MatMul that makes ``logits``): ``lm_head`` (int8 by default), RTN;
- the token embedding table (the Gather on ``input_ids``): ``embeddings`` (int8 by default) as
  ``GatherBlockQuantized``: int4 through ONNX Runtime's quantizer, int8 blocks written here (its quantizer has
  no 8-bit Gather; the operator has).

Every algorithm is ONNX Runtime's own; quantkit picks the nodes and passes the settings.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import QuantizationError

logger = logging.getLogger(__name__)

__all__ = ["WeightGroups", "weight_groups", "quantize_weight_only", "quantize_gather_int8"]


class WeightGroups:
    """Node names of the three weight groups of a decoder graph."""

    def __init__(self, body: list[str], excluded: list[str], lm_head: str | None, embedding: str | None) -> None:
        self.body, self.excluded, self.lm_head, self.embedding = body, excluded, lm_head, embedding

    def __repr__(self) -> str:
        return (f"WeightGroups({len(self.body)} linear, {len(self.excluded)} excluded, lm_head={self.lm_head!r}, "
                f"embedding={self.embedding!r})")


def _constant_matmuls(graph: Any) -> list[Any]:
    inits = {i.name: i for i in graph.initializer}
    return [n for n in graph.node if n.op_type == "MatMul" and n.input[1] in inits and len(inits[n.input[1]].dims) == 2]


def weight_groups(model: Any, exclude: list[str]) -> WeightGroups:
    """Find the LM head (the constant MatMul whose output reaches ``logits`` through shape-only ops), the
    embedding Gather (on ``input_ids``, from a 2-D initializer) and the other constant MatMuls."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    inits = {i.name for i in graph.initializer}
    lm_head = None
    name = "logits" if "logits" in {o.name for o in graph.output} else graph.output[0].name
    node = producer.get(name)
    while node is not None and node.op_type in ("Reshape", "Identity", "Cast", "Squeeze", "Unsqueeze"):
        node = producer.get(node.input[0])
    if node is not None and node.op_type == "MatMul" and node.input[1] in inits:
        lm_head = node.name
    embedding = next((n.name for n in graph.node if n.op_type == "Gather" and n.input[0] in inits
                      and len(n.input) > 1 and n.input[1] == "input_ids"), None)
    body, excluded = [], []
    for n in _constant_matmuls(graph):
        if n.name == lm_head:
            continue
        (excluded if any(fnmatch.fnmatchcase(n.name, p) or n.name == p for p in exclude) else body).append(n.name)
    return WeightGroups(body, excluded, lm_head, embedding)


def _nbits(model: Any, *, nodes: list[str], bits: int, spec: Any, algorithm: str, calibration: Any = None) -> Any:
    """Quantize the constant MatMuls named ``nodes`` (all others untouched) with ONNX Runtime's quantizer."""
    from onnxruntime.quantization import matmul_nbits_quantizer as mnq
    from onnxruntime.quantization.quant_utils import QuantFormat

    keep = [n.name for n in _constant_matmuls(model.graph) if n.name not in set(nodes)]
    op_types = ("MatMul",)
    if algorithm == "rtn":
        config: Any = mnq.DefaultWeightOnlyQuantConfig(
            block_size=spec.block_size, is_symmetric=spec.symmetric, accuracy_level=spec.accuracy_level,
            quant_format=QuantFormat.QOperator, op_types_to_quantize=op_types, bits=bits)
    elif algorithm == "hqq":
        config = mnq.HQQWeightOnlyQuantConfig(block_size=spec.block_size, bits=bits, op_types_to_quantize=op_types)
    elif algorithm == "k_quant":
        config = mnq.KQuantWeightOnlyQuantConfig(op_types_to_quantize=op_types)
    elif algorithm == "gptq":
        config = mnq.GPTQWeightOnlyQuantConfig(calibration_data_reader=calibration, op_types_to_quantize=op_types)
    else:  # the spec's Literal makes this unreachable
        raise QuantizationError(f"weight_only.algorithm: unknown {algorithm!r}")
    quantizer = mnq.MatMulNBitsQuantizer(
        model, bits=bits, block_size=spec.block_size, is_symmetric=spec.symmetric,
        accuracy_level=spec.accuracy_level, nodes_to_exclude=keep, op_types_to_quantize=op_types,
        algo_config=config)
    quantizer.process()
    return quantizer.model.model


def quantize_gather_int8(model: Any, node_name: str, block_size: int, symmetric: bool) -> None:
    """Replace Gather ``node_name`` by ``GatherBlockQuantized`` with 8-bit blocks along the hidden axis (in place)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    node = next(n for n in graph.node if n.name == node_name)
    inits = {i.name: i for i in graph.initializer}
    weight = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
    rows, cols = weight.shape
    block = block_size
    while cols % block:
        block //= 2
    if block < 16:
        raise QuantizationError(f"embedding {node_name}: hidden size {cols} has no block size >= 16 dividing it")
    blocks = weight.reshape(rows, cols // block, block)
    if symmetric:
        scale = np.maximum(np.abs(blocks).max(-1), 1e-12) / 127.0
        zero = np.full(scale.shape, 128, dtype=np.uint8)
    else:
        lo, hi = np.minimum(blocks.min(-1), 0), np.maximum(blocks.max(-1), 0)
        scale = np.maximum(hi - lo, 1e-12) / 255.0
        zero = np.clip(np.round(-lo / scale), 0, 255).astype(np.uint8)
    quant = np.clip(np.round(blocks / scale[..., None] + zero[..., None]), 0, 255).astype(np.uint8).reshape(rows, cols)
    base = node.input[0]
    tensors = [numpy_helper.from_array(quant, base + "_Q8"), numpy_helper.from_array(scale.astype(np.float32),
                                                                                        base + "_scales"),
               numpy_helper.from_array(zero, base + "_zero_points")]
    new = helper.make_node("GatherBlockQuantized", [t.name for t in tensors[:1]] + [node.input[1]]
                           + [t.name for t in tensors[1:]], list(node.output), name=node.name + "_Q8",
                           domain="com.microsoft", gather_axis=0, quantize_axis=1, block_size=block, bits=8)
    index = list(graph.node).index(node)
    graph.node.remove(node)
    graph.node.insert(index, new)
    graph.initializer.extend(tensors)
    if not any(n.input and base in n.input for n in graph.node):
        graph.initializer.remove(inits[base])
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


class _WindowReader:
    """GPTQ's calibration reader: windows of calibration text as prefill feeds (empty cache)."""

    def __init__(self, data: Any, input_names: list[Any], count: int) -> None:
        from ..feeds import complete_feeds, fillable

        names = [i.name for i in input_names if i.name in data.inputs or not fillable(i.name)]
        self._feeds = [complete_feeds(input_names, data.batch(i, i + 1, names)) for i in range(min(count, len(data)))]
        self._it = iter(self._feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._feeds)

    def __iter__(self) -> Any:
        return iter(self._feeds)

    def __deepcopy__(self, memo: Any) -> "_WindowReader":
        return self


def quantize_weight_only(source: Path, output: Path, spec: Any, calibration: Any = None) -> tuple[float, dict[str, Any]]:
    """Write the weight-only quantized ``source`` to ``output``; (seconds calibrating, details for the report)."""
    import onnx

    from ..latency import cpu_session

    model = onnx.load(str(source))
    groups = weight_groups(model, spec.exclude)
    if not groups.body and spec.lm_head == "fp32":
        raise QuantizationError(f"weight_only: no linear layer to quantize in {source.name} "
                                f"({len(groups.excluded)} excluded by weight_only.exclude)")
    logger.info("weight-only %s: %r", spec.describe(), groups)
    calibration_s = 0.0
    reader = None
    if spec.needs_calibration:
        if calibration is None or len(calibration) == 0:
            raise QuantizationError(f"weight_only.algorithm {spec.algorithm} needs data.calibration (text)")
        start = time.perf_counter()
        inputs = cpu_session(source, None).get_inputs()
        reader = _WindowReader(calibration, inputs, spec.calibration_windows)
        calibration_s = time.perf_counter() - start
    if groups.body:
        model = _nbits(model, nodes=groups.body, bits=spec.bits, spec=spec, algorithm=spec.algorithm,
                       calibration=reader)
    if groups.lm_head is not None and spec.lm_head != "fp32":
        model = _nbits(model, nodes=[groups.lm_head], bits=8 if spec.lm_head == "int8" else 4, spec=spec,
                       algorithm="rtn")
    if groups.embedding is not None and spec.embeddings == "int8":
        quantize_gather_int8(model, groups.embedding, spec.block_size, spec.symmetric)
    elif groups.embedding is not None and spec.embeddings == "int4":
        model = _gather_int4(model, groups.embedding, spec)
    if model.ir_version > 10:
        model.ir_version = 10  # onnxruntime 1.31 reads IR <= 10 for int4 graphs written by onnx 1.23
    output.parent.mkdir(parents=True, exist_ok=True)
    if model.ByteSize() > 2**31 - 2**20:  # protobuf's 2 GB limit: weights beside the graph
        onnx.save(model, str(output), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=output.name + "_data")
    else:
        onnx.save(model, str(output))
    details = {"weight_only": {"linear_layers": len(groups.body), "excluded": groups.excluded,
                               "lm_head": groups.lm_head if spec.lm_head != "fp32" else None,
                               "embedding": groups.embedding if spec.embeddings != "fp32" else None,
                               "settings": spec.describe()}}
    return calibration_s, details


def _gather_int4(model: Any, node_name: str, spec: Any) -> Any:
    from onnxruntime.quantization import matmul_nbits_quantizer as mnq
    from onnxruntime.quantization.quant_utils import QuantFormat

    others = [n.name for n in model.graph.node if n.op_type == "Gather" and n.name != node_name]
    config = mnq.DefaultWeightOnlyQuantConfig(block_size=spec.block_size, is_symmetric=spec.symmetric,
                                              quant_format=QuantFormat.QOperator, op_types_to_quantize=("Gather",),
                                              quant_axes=(("Gather", 1),), bits=4)
    quantizer = mnq.MatMulNBitsQuantizer(model, nodes_to_exclude=others, algo_config=config)
    quantizer.process()
    return quantizer.model.model
