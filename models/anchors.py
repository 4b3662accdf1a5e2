"""Extraction of constants from upstream graphs: SSD anchor tables as [A, 4] float32 [yc, xc, h, w], and tensors the
converter dropped.

Owns: reading anchors the upstream post-processing consumes, so the served graph can expose them as an output
(`ssd_anchors` decoding, `center_size` coding) once that post-processing is cut off; and reading any other TFLite
constant a graph-surgery step needs back (the fully-connected bias of graph_surgery.restore_bias)."""
import numpy as np

from common import quiet_stderr, tensorflow


def tflite_tensor(path, tensor_name):
    """A constant of a TFLite file as stored: (values, scale, zero point); scale 0.0 when it is not quantised."""
    tf = tensorflow()  # heavy import: only when the built graph is not cached
    with quiet_stderr():
        interp = tf.lite.Interpreter(model_path=str(path))
    for d in interp.get_tensor_details():
        if d["name"] == tensor_name:
            scale, zero = d["quantization"]
            return interp.get_tensor(d["index"]), scale, zero
    raise ValueError(f"no tensor {tensor_name!r} in {path}")


def tflite_anchors(path, tensor_name="anchors"):
    """The TFLite_Detection_PostProcess op's anchor input: a (possibly uint8-quantised) constant in [yc, xc, h, w]."""
    q, scale, zero = tflite_tensor(path, tensor_name)
    q = q.astype(np.float64)
    return ((q - zero) * scale if scale else q).astype(np.float32)


def graphdef_anchors(path, anchors_tensor, image_tensor, side):
    """TF object-detection-API frozen graph: run its anchor generator (corners [y1, x1, y2, x2]) for a side x side input."""
    tf = tensorflow()
    gd = tf.compat.v1.GraphDef()
    gd.ParseFromString(open(path, "rb").read())
    with tf.Graph().as_default() as g:
        tf.import_graph_def(gd, name="")
        with tf.compat.v1.Session(graph=g) as s:
            c = s.run(anchors_tensor, {image_tensor: np.zeros((1, side, side, 3), np.uint8)})
    y1, x1, y2, x2 = c.T
    return np.stack([(y1 + y2) / 2, (x1 + x2) / 2, y2 - y1, x2 - x1], axis=1).astype(np.float32)
