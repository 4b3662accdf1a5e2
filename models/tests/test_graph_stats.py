"""The parameter / multiply-add counter on a hand-checkable graph (quantised weight counted once)."""
import numpy as np
from onnx import TensorProto, helper, numpy_helper

import graph_stats


def test_counts_conv_gemm_and_quantised_weights_once():
    w = numpy_helper.from_array(np.ones((8, 3, 3, 3), np.int8), "w_q")  # stored int8 weight, dequantised in-graph
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zero = numpy_helper.from_array(np.array(0, np.int8), "z")
    b = numpy_helper.from_array(np.zeros(8, np.float32), "b")
    fc = numpy_helper.from_array(np.ones((8, 10), np.float32), "fc")
    nodes = [
        helper.make_node("DequantizeLinear", ["w_q", "s", "z"], ["w"]),
        helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1]),             # 8x16x16 out, 27 MACs each
        helper.make_node("GlobalAveragePool", ["y"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["out"]),                                # 8 x 10 MACs
    ]
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 10])],
                          [w, scale, zero, b, fc])
    params, macs = graph_stats.count(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    assert params == 8 * 27 + 8 + 80
    assert macs == 8 * 16 * 16 * 27 + 80
