"""Edits of converted ONNX graphs: symbolic batch, global pooling, float or dequantised outputs, cutting before
post-processing, extra outputs.

Owns: every structural change between the converter's output and the served model.onnx. Each step is a pure
function ModelProto -> ModelProto, selected by name from the manifest recipe (STEPS)."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

BATCH = "N"


def _inits(model):
    return {i.name: i for i in model.graph.initializer}


def _producer(model):
    return {o: n for n in model.graph.node for o in n.output}


def _set_batch(value_info):
    dims = value_info.type.tensor_type.shape.dim
    if dims:
        dims[0].Clear()
        dims[0].dim_param = BATCH


def _fresh(model, base):
    names = {i.name for i in model.graph.initializer} | {o for n in model.graph.node for o in n.output}
    i = 0
    while f"{base}_{i}" in names:
        i += 1
    return f"{base}_{i}"


def symbolic_batch(model, **_):
    """Make dim 0 symbolic: graph I/O dim_param "N", and batch-1 Reshape targets copy the batch from their input.

    TFLite graphs bake batch 1 into Reshape shape constants; Reshape's 0 means "copy this dim from the input", which
    is exactly the batch (all these reshapes keep the batch in dim 0)."""
    inits = _inits(model)
    for node in model.graph.node:
        if node.op_type != "Reshape" or node.input[1] not in inits:
            continue
        shape = numpy_helper.to_array(inits[node.input[1]]).copy()
        if shape.ndim == 1 and shape.size > 1 and shape[0] == 1:
            shape[0] = 0
            # A new initializer per node: shape constants may be shared with reshapes we do not touch.
            name = _fresh(model, node.input[1] + "_batch")
            model.graph.initializer.append(numpy_helper.from_array(shape.astype(np.int64), name))
            node.input[1] = name
    for vi in list(model.graph.input) + list(model.graph.output):
        _set_batch(vi)
    return model


def global_pool(model, resolution, **_):
    """Replace the classifier's fixed 7x7 AveragePool by GlobalAveragePool and set the input side to `resolution`.

    The network is fully convolutional up to that pool, so this is the only shape-dependent node; the same weights then
    run at any input size (this is NOT the paper's separately trained lower-resolution checkpoints)."""
    pools = [n for n in model.graph.node if n.op_type == "AveragePool"]
    if len(pools) != 1:
        raise ValueError(f"global_pool expects exactly one AveragePool, found {len(pools)}")
    pool = pools[0]
    pool.op_type = "GlobalAveragePool"
    del pool.attribute[:]
    dims = model.graph.input[0].type.tensor_type.shape.dim  # NHWC
    dims[1].dim_value = resolution
    dims[2].dim_value = resolution
    return model


def dequantize_output(model, output, **_):
    """Serve float32 scores: append DequantizeLinear with the quantisation parameters of the uint8 output.

    The output's producer is the QuantizeLinear that defines its scale / zero point; reusing them makes the float
    value an exact image of the uint8 value (scale is a power of two for the softmax), so bit-exactness is preserved."""
    q = _producer(model).get(output)
    if q is None or q.op_type != "QuantizeLinear":
        raise ValueError(f"{output} is not produced by QuantizeLinear")
    out_vi = next(o for o in model.graph.output if o.name == output)
    deq_name = _fresh(model, output + "_float")
    model.graph.node.append(helper.make_node("DequantizeLinear", [output, q.input[1], q.input[2]], [deq_name]))
    out_vi.name = deq_name
    out_vi.type.tensor_type.elem_type = TensorProto.FLOAT
    return model


def float_output(model, output, **_):
    """Serve the float32 tensor that the output's QuantizeLinear quantises, and drop that QuantizeLinear.

    Why: `tf2onnx --dequantize` turns weights into float32 and drops the activations' fake quantisation, but keeps
    the QuantizeLinear of the uint8 graph output; the float softmax then reaches clients in steps of 1/256, most
    classes as exact zeros. Serving the QuantizeLinear's input gives the softmax of the float logits unrounded."""
    q = _producer(model).get(output)
    if q is None or q.op_type != "QuantizeLinear":
        raise ValueError(f"{output} is not produced by QuantizeLinear")
    out_vi = next(o for o in model.graph.output if o.name == output)
    out_vi.name = q.input[0]
    out_vi.type.tensor_type.elem_type = TensorProto.FLOAT
    model.graph.node.remove(q)
    return prune(model)


def restore_bias(model, output, bias, **_):
    """Add back the bias of a quantised fully-connected layer that the converter dropped: the MatMul producing
    `output` is followed by an Add of DequantizeLinear(int32 bias), `bias` = (values, scale, zero) from the TFLite file.

    Why: tf2onnx 1.17 turns TFLite FULLY_CONNECTED into a MatMul and loses its int32 bias, so the iNat classifiers'
    logits missed it (softmax scores up to 217/256 off the interpreter's). Same form as tf2onnx's convolution biases
    (int32, scale = input scale x weight scale, zero point 0), so ONNX Runtime fuses it the same way."""
    mm = _producer(model).get(output)
    if mm is None or mm.op_type != "MatMul":
        raise ValueError(f"{output} is not produced by MatMul")
    if any(n.op_type == "Add" and output in n.input for n in model.graph.node):
        raise ValueError(f"{output} already feeds an Add: the converter kept the bias")  # never add it twice
    values, scale, zero = bias
    q, s, z = _fresh(model, "fc_bias_q"), _fresh(model, "fc_bias_scale"), _fresh(model, "fc_bias_zero")
    model.graph.initializer.extend([numpy_helper.from_array(np.asarray(values, np.int32), q),
                                    numpy_helper.from_array(np.array(scale, np.float32), s),
                                    numpy_helper.from_array(np.array(zero, np.int32), z)])
    unbiased, dq = _fresh(model, output + "_unbiased"), _fresh(model, "fc_bias")
    mm.output[0] = unbiased
    at = list(model.graph.node).index(mm) + 1  # keep the node list topologically ordered (prune relies on it)
    model.graph.node.insert(at, helper.make_node("DequantizeLinear", [q, s, z], [dq]))
    model.graph.node.insert(at + 1, helper.make_node("Add", [unbiased, dq], [output]))
    return model


def cut(model, outputs, dequantize=(), **_):
    """Replace the graph outputs by the named tensors (cutting off post-processing) and prune what no longer feeds them.

    Tensors listed in `dequantize` are uint8 QuantizeLinear outputs: a DequantizeLinear with the same parameters is
    appended so the served output is float32 but carries exactly the quantised values the upstream op would read."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    prod = _producer(model)
    new_outputs = []
    for name in outputs:
        if name not in prod:
            raise ValueError(f"cut point {name} is not a tensor of the graph")
        if name in dequantize:
            q = prod[name]
            deq = _fresh(model, name + "_float")
            model.graph.node.append(helper.make_node("DequantizeLinear", [name, q.input[1], q.input[2]], [deq]))
            new_outputs.append(helper.make_tensor_value_info(deq, TensorProto.FLOAT, None))
        else:
            vi = types.get(name)
            elem = vi.type.tensor_type.elem_type if vi is not None else TensorProto.FLOAT
            new_outputs.append(helper.make_tensor_value_info(name, elem, None))
    del model.graph.output[:]
    model.graph.output.extend(new_outputs)
    return prune(model)


def prune(model):
    """Drop nodes and initializers that do not contribute to any graph output."""
    needed = {o.name for o in model.graph.output}
    keep = []
    for node in reversed(model.graph.node):  # tf2onnx emits nodes in topological order
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    keep.reverse()
    del model.graph.node[:]
    model.graph.node.extend(keep)
    used = [i for i in model.graph.initializer if i.name in needed]
    del model.graph.initializer[:]
    model.graph.initializer.extend(used)
    return model


def anchors_output(model, anchors, name="anchors", **_):
    """Add constant anchors [A, 4] as a graph output [N, A, 4], broadcast to the batch of the first input.

    The contract wants anchors beside the raw encodings so the server needs no model-specific tables."""
    anchors = np.asarray(anchors, dtype=np.float32)
    const = _fresh(model, "anchor_table")
    model.graph.initializer.append(numpy_helper.from_array(anchors[None], const))
    inp = model.graph.input[0].name
    shape, batch, target = _fresh(model, "in_shape"), _fresh(model, "batch"), _fresh(model, "anchor_shape")
    tail = _fresh(model, "anchor_tail")
    s0, s1 = _fresh(model, "zero"), _fresh(model, "one")
    model.graph.initializer.extend([
        numpy_helper.from_array(np.array(anchors.shape, np.int64), tail),
        numpy_helper.from_array(np.array([0], np.int64), s0),
        numpy_helper.from_array(np.array([1], np.int64), s1),
    ])
    model.graph.node.extend([
        helper.make_node("Shape", [inp], [shape]),
        helper.make_node("Slice", [shape, s0, s1], [batch]),
        helper.make_node("Concat", [batch, tail], [target], axis=0),
        helper.make_node("Expand", [const, target], [name]),
    ])
    model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [BATCH, *anchors.shape]))
    return model


def output_dims(model, dims, **_):
    """Declare static non-batch dims of outputs whose size the converter left symbolic (e.g. the anchor count of a
    TF graph whose reshapes are computed at run time); verify.check_batch compares them with the actual outputs."""
    for vi in model.graph.output:
        if vi.name in dims:
            shape = vi.type.tensor_type.shape
            del shape.dim[:]
            shape.dim.add().dim_param = BATCH
            for d in dims[vi.name]:
                shape.dim.add().dim_value = d
    return model


def unsigned_int8(model, **_):
    """Re-express a signed int8 QDQ graph in uint8: every int8 constant (weights, zero points, quantized anchors)
    moves up by 128, so every dequantized value, and so the model's function, is exactly the same.

    Why: on x86 CPUs with AVX2 but no VNNI, ONNX Runtime runs int8 x int8 convolutions through a u8 x s8 kernel
    whose 16-bit pairwise sums saturate, and this graph's outputs drift far enough to lose detections (a 0.64 horse
    of reference.json disappears, 0.89 persons drop to 0.61). Its uint8 x uint8 kernel widens to 16 bits first and
    does not saturate; ARM's kernels are exact either way. ORT's own fix for this (session.x64quantprecision)
    fails to load this graph in ORT 1.32."""
    for t in model.graph.initializer:
        if t.data_type == TensorProto.INT8:
            shifted = numpy_helper.to_array(t).astype(np.int16) + 128
            t.CopyFrom(numpy_helper.from_array(shifted.astype(np.uint8), t.name))
    for node in model.graph.node:
        if node.op_type == "Constant" and any(a.t.data_type == TensorProto.INT8 for a in node.attribute):
            raise ValueError(f"unsigned_int8: int8 Constant node {node.name!r} is not handled")
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) < 3:
            # An implicit zero point keeps its type, so a shifted input would change this node's meaning.
            raise ValueError(f"unsigned_int8: {node.op_type} {node.name!r} has no explicit zero point")
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        if vi.type.tensor_type.elem_type == TensorProto.INT8:
            vi.type.tensor_type.elem_type = TensorProto.UINT8
    return model


def rename_io(model, inputs=None, outputs=None, **_):
    """Give graph inputs/outputs the stable names written in config.json (converter names are long and unstable)."""
    mapping = {}
    for vis, names in ((model.graph.input, inputs or []), (model.graph.output, outputs or [])):
        if len(names) != len(vis):
            raise ValueError(f"rename_io: {len(names)} names for {len(vis)} tensors {[v.name for v in vis]}")
        for vi, new in zip(vis, names):
            mapping[vi.name] = new
            vi.name = new
    for node in model.graph.node:
        for seq in (node.input, node.output):
            for k, t in enumerate(seq):
                if t in mapping:
                    seq[k] = mapping[t]
    return model


def finalize(model):
    """Drop stale shapes, make every I/O batch dim "N", re-infer shapes and check the graph."""
    del model.graph.value_info[:]  # shapes recorded for batch 1 / 224 would contradict the edited graph
    for vi in list(model.graph.input) + list(model.graph.output):
        _set_batch(vi)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    for vi in list(model.graph.input) + list(model.graph.output):
        _set_batch(vi)  # again: inference may have filled in outputs that had no shape (cut points)
    onnx.checker.check_model(model, full_check=True)
    return model


STEPS = {"symbolic_batch": symbolic_batch, "global_pool": global_pool, "dequantize_output": dequantize_output,
         "float_output": float_output, "restore_bias": restore_bias, "cut": cut, "anchors_output": anchors_output,
         "rename_io": rename_io, "output_dims": output_dims, "unsigned_int8": unsigned_int8}
