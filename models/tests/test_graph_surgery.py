"""Graph edits that must not change what a model computes, or that change only what they say they change."""
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import graph_surgery


def _signed_qdq_conv():
    """x -> Q/DQ (int8 activations) -> Conv with int8 weights (DQ) -> Q/DQ -> y: a signed QDQ graph like ST's."""
    rng = np.random.default_rng(7)
    inits = [
        numpy_helper.from_array(rng.integers(-128, 128, (4, 3, 3, 3)).astype(np.int8), "w_q"),
        numpy_helper.from_array(np.array(0.02, np.float32), "w_s"),
        numpy_helper.from_array(np.array(0, np.int8), "w_z"),
        numpy_helper.from_array(np.array(0.05, np.float32), "a_s"),
        numpy_helper.from_array(np.array(-3, np.int8), "a_z"),
        numpy_helper.from_array(np.array(0.1, np.float32), "y_s"),
        numpy_helper.from_array(np.array(5, np.int8), "y_z"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "a_s", "a_z"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "a_s", "a_z"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w"]),
        helper.make_node("Conv", ["x_dq", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["c", "y_s", "y_z"], ["c_q"]),
        helper.make_node("DequantizeLinear", ["c_q", "y_s", "y_z"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model, x):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # Reference semantics (no fused integer kernels): the two graphs must then agree exactly.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_unsigned_int8_keeps_the_function_and_leaves_no_int8():
    x = np.random.default_rng(1).uniform(-4, 4, (1, 3, 8, 8)).astype(np.float32)
    signed = _signed_qdq_conv()
    before = _run(signed, x)
    unsigned = graph_surgery.unsigned_int8(_signed_qdq_conv())
    assert not [t.name for t in unsigned.graph.initializer if t.data_type == TensorProto.INT8]
    np.testing.assert_array_equal(_run(unsigned, x), before)
    assert np.abs(before).max() > 0  # the comparison is not between two all-zero tensors


def test_unsigned_int8_refuses_an_implicit_zero_point():
    model = _signed_qdq_conv()
    node = model.graph.node[0]
    del node.input[2:]
    with pytest.raises(ValueError, match="no explicit zero point"):
        graph_surgery.unsigned_int8(model)


def _quantised_softmax():
    """x -> Softmax -> QuantizeLinear (uint8, 1/256) -> y: the output end of a `tf2onnx --dequantize` classifier."""
    inits = [numpy_helper.from_array(np.array(1 / 256, np.float32), "s"), numpy_helper.from_array(np.array(0, np.uint8), "z")]
    nodes = [helper.make_node("Softmax", ["x"], ["p"]), helper.make_node("QuantizeLinear", ["p", "s", "z"], ["y"])]
    graph = helper.make_graph(nodes, "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_float_output_serves_the_softmax_unrounded():
    x = np.random.default_rng(2).normal(0, 2, (1, 10)).astype(np.float32)
    model = graph_surgery.float_output(_quantised_softmax(), output="y")
    assert [n.op_type for n in model.graph.node] == ["Softmax"] and not model.graph.initializer
    got = _run(model, x)
    want = np.exp(x - x.max()) / np.exp(x - x.max()).sum()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert np.count_nonzero(np.mod(got * 256, 1)) == got.size  # not multiples of 1/256 any more


def _matmul_then_quantize():
    """x -> MatMul(w) -> QuantizeLinear -> y: a FULLY_CONNECTED as tf2onnx leaves it, without its bias."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.normal(0, 1, (4, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array(0.05, np.float32), "s"), numpy_helper.from_array(np.array(128, np.uint8), "z")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["logits"]), helper.make_node("QuantizeLinear", ["logits", "s", "z"], ["y"])]
    graph = helper.make_graph(nodes, "fc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_restore_bias_adds_the_dequantised_int32_bias_once():
    x = np.random.default_rng(4).normal(0, 1, (1, 4)).astype(np.float32)
    bias = (np.array([200, -400, 0], np.int32), 0.01, 0)
    before = _run(_matmul_then_quantize(), x).astype(int)
    model = graph_surgery.restore_bias(_matmul_then_quantize(), output="logits", bias=bias)
    after = _run(model, x).astype(int)
    np.testing.assert_array_equal(after - before, [[40, -80, 0]])  # bias 2.0, -4.0, 0 at output scale 0.05
    with pytest.raises(ValueError, match="not produced by MatMul"):  # the name now belongs to the Add
        graph_surgery.restore_bias(model, output="logits", bias=bias)
    matmul_output = next(n.output[0] for n in model.graph.node if n.op_type == "MatMul")
    with pytest.raises(ValueError, match="already feeds an Add"):  # a converter that kept the bias
        graph_surgery.restore_bias(model, output=matmul_output, bias=bias)
