"""QDQ graph passes (onnx + numpy only) for models exported from PyTorch PT2E quantization.

``torch.onnx.export(dynamo=True)`` of a converted PT2E model keeps FP32 weights followed by
QuantizeLinear (and a Clip for per-channel weights), so the file is *larger* than FP32.
These passes store the weights as int8 instead; outputs are bit-identical.

fold_constant_weight_qdq(model)
    QuantizeLinear whose x/scale/zero_point are constants (initializers or Constant
    nodes) is evaluated offline.  An optional chain of Clip nodes with constant
    bounds directly after it (the torch.onnx/torchlib lowering of
    quantized_decomposed.quantize_per_channel emits QuantizeLinear -> Clip(qmin,qmax))
    is folded too.  The int8/uint8 result becomes a new initializer that feeds the
    consumers (normally DequantizeLinear) directly; the Q/Clip nodes are removed and
    the now-unused FP32 initializers / Constant nodes are pruned.

fold_dq_transpose(model)
    Optional: int8 initializer -> DequantizeLinear -> Transpose(perm)  becomes
    transposed int8 initializer -> DequantizeLinear(axis remapped), so that the DQ
    feeds MatMul directly (the torchlib lowering of aten.linear is
    Transpose(W) -> MatMul).

quantize_gather_weights(model)
    Optional, NOT part of the PT2E recipe: weight-only per-row symmetric int8 for
    float initializers used as Gather data (embedding tables), via DQ(axis=0)->Gather.

All passes work on the main graph only (subgraphs of If/Loop/Scan are not
rewritten, but names referenced from subgraphs are treated as "used").
"""
from __future__ import annotations

__all__ = [
    "quantize_linear_np",
    "fold_constant_weight_qdq",
    "fold_dq_transpose",
    "quantize_gather_weights",
    "unshare_qdq_params",
    "strip_metadata",
]

from collections import Counter, defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper

_FLOAT_DTYPES = (np.float32, np.float64, np.float16)
_INT_QTYPES = {
    np.dtype(np.int8): onnx.TensorProto.INT8,
    np.dtype(np.uint8): onnx.TensorProto.UINT8,
    np.dtype(np.int16): onnx.TensorProto.INT16,
    np.dtype(np.uint16): onnx.TensorProto.UINT16,
}
_TP_TO_NP = {v: k for k, v in _INT_QTYPES.items()}


def _attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _constant_node_value(node):
    a = node.attribute[0]
    if a.name == "value":
        return numpy_helper.to_array(a.t)
    if a.name == "value_float":
        return np.array(a.f, np.float32)
    if a.name == "value_floats":
        return np.array(list(a.floats), np.float32)
    if a.name == "value_int":
        return np.array(a.i, np.int64)
    if a.name == "value_ints":
        return np.array(list(a.ints), np.int64)
    return None  # sparse_value / strings: not handled


def _subgraph_inputs(graph):
    """All tensor names referenced by nodes of nested subgraphs (implicit captures)."""
    names = set()
    for n in graph.node:
        for a in n.attribute:
            gs = []
            if a.type == onnx.AttributeProto.GRAPH:
                gs = [a.g]
            elif a.type == onnx.AttributeProto.GRAPHS:
                gs = list(a.graphs)
            for sg in gs:
                for sn in sg.node:
                    names.update(i for i in sn.input if i)
                names |= _subgraph_inputs(sg)
    return names


class _GraphIndex:
    def __init__(self, graph):
        self.g = graph
        self.inits = {t.name: t for t in graph.initializer}
        self.const_nodes = {n.output[0]: n for n in graph.node if n.op_type == "Constant" and n.domain in ("", "ai.onnx")}
        self.consumers = defaultdict(list)
        for n in graph.node:
            for i in n.input:
                if i:
                    self.consumers[i].append(n)
        self.graph_outputs = {o.name for o in graph.output}
        self.sub_used = _subgraph_inputs(graph)

    def const(self, name):
        if not name:
            return None
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        n = self.const_nodes.get(name)
        return None if n is None else _constant_node_value(n)


def _unique(name, taken):
    base, k = name, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


def _prune(graph):
    """Drop initializers / Constant nodes / value_info that nothing references any more."""
    while True:
        used = {i for n in graph.node for i in n.input if i} | {o.name for o in graph.output} | _subgraph_inputs(graph)
        dead_consts = [n for n in graph.node if n.op_type == "Constant" and all(o not in used for o in n.output)]
        for n in dead_consts:
            graph.node.remove(n)
        dead_inits = [t for t in graph.initializer if t.name not in used]
        for t in dead_inits:
            graph.initializer.remove(t)
        dead_in = [i for i in graph.input if i.name in {t.name for t in dead_inits}]
        for i in dead_in:
            graph.input.remove(i)
        if not dead_consts and not dead_inits:
            break
    produced = {o for n in graph.node for o in n.output} | {i.name for i in graph.input} | {t.name for t in graph.initializer}
    for vi in [v for v in graph.value_info if v.name not in produced]:
        graph.value_info.remove(vi)


def quantize_linear_np(x, scale, zero_point, axis=1, out_dtype=None):
    """numpy reference of ONNX QuantizeLinear (opset 13-21, no block_size):
    y = saturate(round_half_to_even(x / scale) + zero_point)."""
    if out_dtype is None:
        out_dtype = zero_point.dtype if zero_point is not None else np.dtype(np.uint8)
    out_dtype = np.dtype(out_dtype)
    x = np.asarray(x, np.float32)
    scale = np.asarray(scale, np.float32)
    zp = np.zeros_like(scale, dtype=np.int64) if zero_point is None else np.asarray(zero_point).astype(np.int64)
    if scale.size == 1 and scale.ndim <= 1:
        s, z = scale.reshape(()), zp.reshape(())
    else:  # per-axis
        if scale.ndim != 1:
            raise ValueError("only 1-D per-axis scales are handled")
        ax = axis % x.ndim
        shape = [1] * x.ndim
        shape[ax] = scale.shape[0]
        s, z = scale.reshape(shape), zp.reshape(shape)
    r = np.rint(np.divide(x, s, dtype=np.float32))  # rint == round half to even
    info = np.iinfo(out_dtype)
    q = np.clip(r.astype(np.float64) + z, info.min, info.max)
    return q.astype(out_dtype)


def fold_constant_weight_qdq(model: onnx.ModelProto):
    g = model.graph
    idx = _GraphIndex(g)
    taken = {t.name for t in g.initializer} | {o for n in g.node for o in n.output} | {i.name for i in g.input}
    rename, remove, new_inits = {}, set(), []
    stats = Counter()
    for n in list(g.node):
        if n.op_type != "QuantizeLinear" or n.domain not in ("", "ai.onnx"):
            continue
        stats["quantize_linear_seen"] += 1
        x = idx.const(n.input[0])
        scale = idx.const(n.input[1])
        zp = idx.const(n.input[2]) if len(n.input) > 2 else None
        if x is None or scale is None or (len(n.input) > 2 and n.input[2] and zp is None):
            continue
        if x.dtype.type not in _FLOAT_DTYPES:
            continue
        at = _attrs(n)
        if at.get("block_size", 0):
            stats["skipped_blocked"] += 1
            continue
        if zp is not None:
            out_dtype = zp.dtype
        elif "output_dtype" in at and at["output_dtype"]:
            out_dtype = _TP_TO_NP.get(at["output_dtype"])
        else:
            out_dtype = np.dtype(np.uint8)
        if out_dtype is None or np.dtype(out_dtype) not in _INT_QTYPES:
            stats["skipped_dtype"] += 1  # float8 / int4 etc. not handled
            continue
        if not np.all(np.isfinite(scale)) or np.any(scale == 0):
            stats["skipped_bad_scale"] += 1
            continue
        q = quantize_linear_np(x, scale, zp, axis=at.get("axis", 1), out_dtype=out_dtype)
        chain = [n]
        out = n.output[0]
        # fold Q -> Clip(const min, const max) chains (torchlib quantize_per_channel lowering)
        while len(idx.consumers[out]) == 1 and out not in idx.graph_outputs and out not in idx.sub_used:
            c = idx.consumers[out][0]
            if c.op_type != "Clip" or c.domain not in ("", "ai.onnx") or c.input[0] != out:
                break
            lo = idx.const(c.input[1]) if len(c.input) > 1 and c.input[1] else None
            hi = idx.const(c.input[2]) if len(c.input) > 2 and c.input[2] else None
            if (len(c.input) > 1 and c.input[1] and lo is None) or (len(c.input) > 2 and c.input[2] and hi is None):
                break
            if lo is not None or hi is not None:
                q = np.clip(q, lo, hi).astype(q.dtype)
            chain.append(c)
            out = c.output[0]
            stats["clip_folded"] += 1
        if out in idx.graph_outputs or out in idx.sub_used:
            stats["skipped_graph_output"] += 1
            continue
        new_name = _unique(f"{n.input[0]}_quantized", taken)
        new_inits.append(numpy_helper.from_array(q, new_name))
        rename[out] = new_name
        remove.update(id(c) for c in chain)
        stats["quantize_linear_folded"] += 1
        stats["dequantize_consumers"] += sum(1 for c in idx.consumers[out] if c.op_type == "DequantizeLinear")
    keep = [n for n in g.node if id(n) not in remove]
    for n in keep:
        for i, name in enumerate(n.input):
            if name in rename:
                n.input[i] = rename[name]
    del g.node[:]
    g.node.extend(keep)
    g.initializer.extend(new_inits)
    _prune(g)
    return model, dict(stats)


def fold_dq_transpose(model: onnx.ModelProto):
    g = model.graph
    idx = _GraphIndex(g)
    remove, stats = set(), Counter()
    for dq in list(g.node):
        if dq.op_type != "DequantizeLinear" or dq.input[0] not in idx.inits:
            continue
        w_name = dq.input[0]
        if len(idx.consumers[w_name]) != 1 or w_name in idx.graph_outputs or w_name in idx.sub_used:
            continue
        outs = idx.consumers[dq.output[0]]
        if len(outs) != 1 or outs[0].op_type != "Transpose" or dq.output[0] in idx.graph_outputs:
            continue
        tr = outs[0]
        w = numpy_helper.to_array(idx.inits[w_name])
        perm = _attrs(tr).get("perm", list(range(w.ndim))[::-1])
        at = _attrs(dq)
        scale = idx.const(dq.input[1])
        if scale is None or at.get("block_size", 0):
            continue
        new_w = np.ascontiguousarray(np.transpose(w, perm))
        idx.inits[w_name].CopyFrom(numpy_helper.from_array(new_w, w_name))
        # torch.onnx (dynamo) writes value_info for initializers too -> drop the stale shape
        for vi in [v for v in g.value_info if v.name in (w_name, dq.output[0])]:
            g.value_info.remove(vi)
        if scale.size > 1:  # per-axis: remap axis
            old_axis = at.get("axis", 1) % w.ndim
            new_axis = list(perm).index(old_axis)
            for a in dq.attribute:
                if a.name == "axis":
                    a.i = new_axis
                    break
            else:
                dq.attribute.append(helper.make_attribute("axis", new_axis))
        dq.output[0] = tr.output[0]
        remove.add(id(tr))
        stats["transpose_folded"] += 1
    keep = [n for n in g.node if id(n) not in remove]
    del g.node[:]
    g.node.extend(keep)
    _prune(g)
    return model, dict(stats)


def quantize_gather_weights(model: onnx.ModelProto, min_rows: int = 16):
    """Weight-only per-row symmetric int8 for float Gather tables (embeddings)."""
    g = model.graph
    idx = _GraphIndex(g)
    taken = {t.name for t in g.initializer} | {o for n in g.node for o in n.output}
    new_nodes, stats = [], Counter()
    done = {}
    for n in list(g.node):
        if n.op_type != "Gather" or n.input[0] not in idx.inits or _attrs(n).get("axis", 0) != 0:
            continue
        name = n.input[0]
        w = numpy_helper.to_array(idx.inits[name])
        if w.dtype != np.float32 or w.ndim != 2 or w.shape[0] < min_rows:
            continue
        if name not in done:
            amax = np.abs(w).max(axis=1)
            scale = np.maximum(amax / 127.0, np.float32(2**-20)).astype(np.float32)
            q = quantize_linear_np(w, scale, np.zeros_like(scale, dtype=np.int8), axis=0, out_dtype=np.int8)
            qn, sn, on = _unique(name + "_q", taken), _unique(name + "_scale", taken), _unique(name + "_dq", taken)
            g.initializer.extend([numpy_helper.from_array(q, qn), numpy_helper.from_array(scale, sn)])
            new_nodes.append(helper.make_node("DequantizeLinear", [qn, sn], [on], name=on, axis=0))
            done[name] = on
            stats["gather_tables_quantized"] += 1
        n.input[0] = done[name]
    # DQ nodes have only initializer inputs -> valid to put first (topological order)
    for nn in reversed(new_nodes):
        g.node.insert(0, nn)
    _prune(g)
    return model, dict(stats)


def unshare_qdq_params(model: onnx.ModelProto):
    """Give every Q/DQ node its own scale / zero-point initializers.

    torch.onnx's optimizer de-duplicates identical constants, so e.g. one int8 zero-point
    vector is shared by many DequantizeLinear nodes.  ORT 1.31's AVX2 precision fixer
    (session config "session.x64quantprecision"="1", which rewrites s8 weights/zp to u8 to
    avoid vpmaddubsw saturation) then fails with
    "graph.cc AddInitializedOrtValue Attempt to replace the existing tensor".
    """
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    taken = set(inits) | {o for n in g.node for o in n.output}
    seen, n_new = set(), 0
    for n in g.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for i in (1, 2):
            if i < len(n.input) and n.input[i] in inits:
                name = n.input[i]
                if name in seen:
                    nn = _unique(f"{name}_u", taken)
                    t = onnx.TensorProto()
                    t.CopyFrom(inits[name])
                    t.name = nn
                    g.initializer.append(t)
                    n.input[i] = nn
                    n_new += 1
                else:
                    seen.add(name)
    return model, {"qdq_params_unshared": n_new}


def strip_metadata(model: onnx.ModelProto):
    """torch.onnx(dynamo) stores per-node metadata_props (stack traces, fx node text,
    name scopes): for a tiny model that is >60% of the file.  Strip for size comparisons
    / shipping (keeps graph semantics)."""
    def _strip(graph):
        for n in graph.node:
            del n.metadata_props[:]
            n.doc_string = ""
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    _strip(a.g)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for sg in a.graphs:
                        _strip(sg)
        for coll in (graph.input, graph.output, graph.value_info, graph.initializer):
            for v in coll:
                if hasattr(v, "metadata_props"):
                    del v.metadata_props[:]
                v.doc_string = ""
    _strip(model.graph)
    del model.graph.metadata_props[:]
    return model
