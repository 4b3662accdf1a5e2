"""Writes faulty.onnx, the classifier that tests/health.rs serves to make a model fail or hang on demand.

The fault is in the graph, driven by the image a test sends, so the server runs it exactly as it runs a real
model: no test switch exists in the server. With m the largest pixel value of the batch:
- m == 255 (a white image): a Gather reads past its one-element table, so ONNX Runtime fails the run;
- otherwise a Loop runs m * TRIPS_PER_LEVEL empty iterations before answering, so a black image (and the
  server's zeroed warm-up) is instant and a grey one keeps the model thread busy for seconds.
The scores are the same for every image: [N, CLASSES] of the Loop's count (its value is never checked).

Run: .venv/bin/python server/tests/data/faulty_model.py (writes next to this file)."""
import pathlib

import onnx
from onnx import TensorProto, helper

SIDE = 16
CLASSES = 3
# Iterations per pixel level. On the project's 2-core AMD EPYC machine, with ONNX Runtime 1.32 on one thread,
# level 8 ran in 0.40 s (1.3 us per iteration), so grey 200 holds a model thread for about 10 s.
TRIPS_PER_LEVEL = 40_000


def const(name, dtype, values, dims):
    return helper.make_node("Constant", [], [name], value=helper.make_tensor(name + "_v", dtype, dims, values))


def body():
    """Loop body: carries one float and adds 1 to it, so the optimiser cannot drop the iterations."""
    return helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            const("one", TensorProto.FLOAT, [1.0], []),
            helper.make_node("Add", ["v_in", "one"], ["v_out"]),
        ],
        "count",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, []),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, []),
        ],
    )


def graph():
    nodes = [
        helper.make_node("Cast", ["image"], ["wide"], to=TensorProto.INT64),
        helper.make_node("ReduceMax", ["wide"], ["m"], keepdims=0),
        const("white", TensorProto.INT64, [255], []),
        helper.make_node("Equal", ["m", "white"], ["is_white"]),
        helper.make_node("Cast", ["is_white"], ["fail"], to=TensorProto.INT64),
        # Fails the run for a white image: index 1 of a one-element table.
        const("table", TensorProto.FLOAT, [0.0], [1]),
        const("one_d", TensorProto.INT64, [1], [1]),
        helper.make_node("Reshape", ["fail", "one_d"], ["index"]),
        helper.make_node("Gather", ["table", "index"], ["base"], axis=0),
        # Hangs for a grey image: m * TRIPS_PER_LEVEL iterations, none when failing.
        const("per_level", TensorProto.INT64, [TRIPS_PER_LEVEL], []),
        const("one_i", TensorProto.INT64, [1], []),
        helper.make_node("Sub", ["one_i", "fail"], ["not_fail"]),
        helper.make_node("Mul", ["m", "per_level"], ["trips_all"]),
        helper.make_node("Mul", ["trips_all", "not_fail"], ["trips"]),
        const("true", TensorProto.BOOL, [True], []),
        const("zero_f", TensorProto.FLOAT, [0.0], []),
        helper.make_node("Loop", ["trips", "true", "zero_f"], ["counted"], body=body()),
        helper.make_node("Add", ["base", "counted"], ["score"]),
        # Scores [N, CLASSES]: the batch size from the input's shape.
        helper.make_node("Shape", ["image"], ["shape"]),
        const("zero_d", TensorProto.INT64, [0], [1]),
        helper.make_node("Slice", ["shape", "zero_d", "one_d"], ["batch"]),
        const("classes", TensorProto.INT64, [CLASSES], [1]),
        helper.make_node("Concat", ["batch", "classes"], ["out_shape"], axis=0),
        helper.make_node("Expand", ["score", "out_shape"], ["scores"]),
    ]
    return helper.make_graph(
        nodes,
        "faulty",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", SIDE, SIDE, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", CLASSES])],
    )


def main():
    model = helper.make_model(graph(), opset_imports=[helper.make_opsetid("", 17)], producer_name="faulty_model.py")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    out = pathlib.Path(__file__).with_name("faulty.onnx")
    onnx.save(model, out)
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
