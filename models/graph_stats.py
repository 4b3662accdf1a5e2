"""Size and cost measured from an ONNX graph: parameters and multiply-adds per image.

Owns: the counting rules. MAdds = Conv / Gemm / MatMul multiply-accumulates (as the paper counts);
parameters = elements of the weight and bias tensors of those ops (and BatchNormalization scale/bias), following
DequantizeLinear back to its stored integer tensor so a quantised weight is counted once, not twice."""
import numpy as np
import onnx
from onnx import numpy_helper

COMPUTE_OPS = ("Conv", "Gemm", "MatMul")


def _fixed_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in list(m.graph.input) + list(m.graph.output):
        for d in vi.type.tensor_type.shape.dim[:1]:
            d.Clear()
            d.dim_value = 1
    del m.graph.value_info[:]
    return onnx.shape_inference.infer_shapes(m)


def count(model: onnx.ModelProto) -> tuple[int, int]:
    """(parameters, multiply_adds) for a batch of one."""
    m = _fixed_batch(model)
    inits = {i.name: i for i in m.graph.initializer}
    prod = {o: n for n in m.graph.node for o in n.output}
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input)}

    def root(name):
        # Follow DequantizeLinear / Identity / Cast to the stored tensor: weights are stored once.
        while name not in inits and name in prod and prod[name].op_type in ("DequantizeLinear", "Identity", "Cast"):
            name = prod[name].input[0]
        return name if name in inits else None

    def numel(name):
        return int(np.prod(inits[name].dims)) if name else 0

    params, macs, seen = 0, 0, set()
    for n in m.graph.node:
        if n.op_type in COMPUTE_OPS:
            tensors = [root(t) for t in n.input[1:] if t]
        elif n.op_type == "BatchNormalization":
            tensors = [root(t) for t in n.input[1:3]]
        else:
            continue
        for t in tensors:
            if t and t not in seen:
                seen.add(t)
                params += numel(t)
        if n.op_type == "Conv":
            w = root(n.input[1])
            wdims = list(inits[w].dims) if w else shapes.get(n.input[1])
            out = shapes.get(n.output[0])
            if not out or not wdims or 0 in out:
                raise ValueError(f"cannot size {n.op_type} {n.name}")
            # weight [Cout, Cin/groups, kh, kw]: each output element costs Cin/groups * kh * kw MACs
            macs += int(np.prod(out)) * int(np.prod(wdims[1:]))
        elif n.op_type in ("Gemm", "MatMul"):
            a, out = shapes.get(n.input[0]), shapes.get(n.output[0])
            macs += int(np.prod(out)) * int(a[-1])
    return params, macs
