"""The Open Inference Protocol (KServe V2) as a client no one here wrote speaks it: NVIDIA's `tritonclient`,
over HTTP and over gRPC, against a real mobilenet-serve, whose answers must equal the native API's on the same
images.

Needs the release server binary (`cargo test --release` builds it), the prepared repository and ONNX Runtime
(ORT_DYLIB_PATH), as `make test` provides. Missing inputs fail the tests; they never skip."""
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from conftest import CLASSIFIER, DETECTOR, SEGMENTER, image, model_sized, native


@pytest.fixture(scope="module", params=["http", "grpc"])
def triton(request, server):
    """tritonclient's HTTP or gRPC module and a client of it: every test runs over both protocols."""
    module = triton_http if request.param == "http" else triton_grpc
    return module, module.InferenceServerClient(url=server[f"oip_{request.param}"])


def image_input(module, *names):
    data = module.InferInput("image", [len(names)], "BYTES")
    data.set_data_from_numpy(np.array([image(n) for n in names], dtype=np.object_))
    return data


def requested(module, name, **kwargs):
    if module is triton_http:
        kwargs["binary_data"] = True
    return module.InferRequestedOutput(name, **kwargs)


def test_health_and_metadata(triton):
    module, client = triton
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(CLASSIFIER)
    server_meta = client.get_server_metadata(as_json=True) if module is triton_grpc else client.get_server_metadata()
    assert server_meta["name"] == "mobilenet-serve"
    meta = client.get_model_metadata(DETECTOR, as_json=True) if module is triton_grpc else \
        client.get_model_metadata(DETECTOR)
    assert meta["inputs"][0]["name"] == "image"
    raw = meta["inputs"][1]  # protobuf's JSON gives int64 as strings
    assert (raw["name"], raw["datatype"], [int(d) for d in raw["shape"]]) == ("input", "UINT8", [-1, 256, 256, 3])
    finished = {o["name"] for o in meta["outputs"] if not o["name"].startswith("raw_")}
    assert finished == {"boxes", "scores", "classes", "num_detections"}
    with pytest.raises(InferenceServerException):
        client.get_model_metadata("no_such_model")


def test_classification_extension_equals_the_native_top_k(triton, server):
    module, client = triton
    names = ["parrot.jpg", "cat_720p.jpg"]
    result = client.infer(CLASSIFIER, [image_input(module, *names)],
                          outputs=[requested(module, "classification", class_count=3)])
    classes = result.as_numpy("classification")
    assert classes.shape[0] == 2 and 1 <= classes.shape[1] <= 3
    for row, name in zip(classes, names):
        expected = native(server, f"/v1/classify?model={CLASSIFIER}&top_k=3", name)["classes"]
        # Rows are padded with empty strings to the longest top-k of the batch.
        assert [c.decode() for c in row if c] == [f"{c['score']:.6f}:{c['index']}:{c['label']}" for c in expected]


def test_detection_tensors_equal_the_native_detections(triton, server):
    module, client = triton
    name = "cats_and_dogs.jpg"
    result = client.infer(DETECTOR, [image_input(module, name)])
    count = int(result.as_numpy("num_detections")[0])
    expected = native(server, f"/v1/detect?model={DETECTOR}", name)["detections"]
    assert count == len(expected) > 0
    boxes, classes = result.as_numpy("boxes")[0], result.as_numpy("classes")[0]
    for j, d in enumerate(expected):
        assert classes[j] == d["class_index"]
        np.testing.assert_array_equal(boxes[j], np.array([d["box"][k] for k in ("x1", "y1", "x2", "y2")],
                                                         dtype=np.float32))


def test_segmentation_class_map_equals_the_native_mask(triton, server):
    module, client = triton
    name = "segmentation_input_rotation0.jpg"
    result = client.infer(SEGMENTER, [image_input(module, name)], outputs=[requested(module, "class_map")])
    class_map = result.as_numpy("class_map")
    mask = native(server, f"/v1/segment?model={SEGMENTER}", name)["mask"]
    assert class_map.shape == (1, mask["height"], mask["width"])
    expected = np.repeat(np.array(mask["values"], dtype=np.uint8), mask["lengths"])
    np.testing.assert_array_equal(class_map.reshape(-1), expected)


def test_a_raw_uint8_tensor_answers_as_the_same_pixels_sent_as_an_image(triton, server):
    module, client = triton
    pixels, png = model_sized("parrot.jpg", 96)
    data = module.InferInput("input", [1, 96, 96, 3], "UINT8")
    data.set_data_from_numpy(pixels[np.newaxis])
    result = client.infer(CLASSIFIER, [data], outputs=[requested(module, "classification", class_count=3)])
    expected = native(server, f"/v1/classify?model={CLASSIFIER}&top_k=3", "parrot.png", png)["classes"]
    assert [c.decode() for c in result.as_numpy("classification")[0] if c] == \
        [f"{c['score']:.6f}:{c['index']}:{c['label']}" for c in expected]


def test_a_raw_fp32_tensor_segments_as_the_same_pixels_sent_as_an_image(triton, server):
    # The 257 segmenter takes float32 (pixel - 127.5) / 127.5.
    module, client = triton
    pixels, png = model_sized("segmentation_input_rotation0.jpg", 257)
    data = module.InferInput("input", [1, 257, 257, 3], "FP32")
    data.set_data_from_numpy(((pixels.astype(np.float32) - 127.5) / 127.5)[np.newaxis])
    result = client.infer(SEGMENTER, [data], outputs=[requested(module, "class_map")])
    class_map = result.as_numpy("class_map")
    mask = native(server, f"/v1/segment?model={SEGMENTER}", "segment.png", png)["mask"]
    assert class_map.shape == (1, 257, 257) == (1, mask["height"], mask["width"])
    expected = np.repeat(np.array(mask["values"], dtype=np.uint8), mask["lengths"])
    # The client's float arithmetic may differ from the server's in the last bit; an argmax may flip where two
    # classes tie, nowhere else.
    assert np.mean(class_map.reshape(-1) == expected) > 0.999
    assert len(np.unique(expected)) > 1


def test_the_models_own_outputs_by_name(triton, server):
    module, client = triton
    meta = client.get_model_metadata(DETECTOR, as_json=True) if module is triton_grpc else \
        client.get_model_metadata(DETECTOR)
    raw = {o["name"] for o in meta["outputs"] if o["name"].startswith("raw_")}
    assert raw == {"raw_scores", "raw_boxes", "raw_anchors"}, meta["outputs"]
    result = client.infer(CLASSIFIER, [image_input(module, "parrot.jpg")],
                          outputs=[requested(module, "raw_scores"), requested(module, "classification")])
    scores = result.as_numpy("raw_scores")
    assert scores.dtype == np.float32 and scores.shape[0] == 1 and scores.shape[1] > 1000
    top1 = native(server, f"/v1/classify?model={CLASSIFIER}&top_k=1", "parrot.jpg")["classes"][0]
    assert int(np.argmax(scores[0])) == top1["index"]
    assert result.as_numpy("classification")[0][0].decode().split(":")[1] == str(top1["index"])
    anchors = client.infer(DETECTOR, [image_input(module, "burger.jpg")],
                           outputs=[requested(module, "raw_anchors")]).as_numpy("raw_anchors")
    assert anchors.shape[0] == 1 and anchors.shape[-1] == 4


def test_a_bad_image_is_a_client_error(triton):
    module, client = triton
    data = module.InferInput("image", [1], "BYTES")
    data.set_data_from_numpy(np.array([b"not an image"], dtype=np.object_))
    with pytest.raises(InferenceServerException) as error:
        client.infer(CLASSIFIER, [data])
    expected = "415" if module is triton_http else "StatusCode.INVALID_ARGUMENT"
    assert error.value.status() == expected, error.value
