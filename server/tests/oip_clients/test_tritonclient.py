"""The Open Inference Protocol (KServe V2) as a client no one here wrote speaks it: NVIDIA's `tritonclient`,
over HTTP and over gRPC, against a real mobilenet-serve, whose answers must equal the native API's on the same
images.

Needs the release server binary (`cargo test --release` builds it), the prepared repository and ONNX Runtime
(ORT_DYLIB_PATH), as `make test` provides. Missing inputs fail the tests; they never skip."""
import json
import os
import pathlib
import socket
import subprocess
import time
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

ROOT = pathlib.Path(__file__).resolve().parents[3]
CLASSIFIER = "mobilenet_v2_1.0_96"
DETECTOR = "ssd_mobilenet_v2_fpnlite_256"
SEGMENTER = "deeplabv3_mnv2_257"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def images_dir():
    path = pathlib.Path(os.environ.get("TEST_IMAGES", ROOT.parent / "shared" / "images"))
    assert path.is_dir(), f"TEST_IMAGES={path} does not exist"
    return path


def image(name):
    return (images_dir() / name).read_bytes()


@pytest.fixture(scope="module")
def server():
    binary = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "mobilenet-serve"
    assert binary.is_file(), f"no server binary at {binary}: run `cargo build --release`"
    assert os.environ.get("ORT_DYLIB_PATH"), "set ORT_DYLIB_PATH to libonnxruntime.so (see Makefile)"
    repository = os.environ.get("MODEL_REPOSITORY", str(ROOT / "models" / "repository"))
    http_port, grpc_port = free_port(), free_port()
    process = subprocess.Popen(
        [str(binary), "--model-repository", repository, "--models", f"{CLASSIFIER},{DETECTOR},{SEGMENTER}",
         "--http-addr", f"127.0.0.1:{http_port}", "--grpc-addr", f"127.0.0.1:{grpc_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{http_port}"
    try:
        for _ in range(300):
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            pytest.fail("the server was not ready within 60 s")
        yield {"http": base, "oip_http": f"127.0.0.1:{http_port}", "oip_grpc": f"127.0.0.1:{grpc_port}"}
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module", params=["http", "grpc"])
def triton(request, server):
    """tritonclient's HTTP or gRPC module and a client of it: every test runs over both protocols."""
    module = triton_http if request.param == "http" else triton_grpc
    return module, module.InferenceServerClient(url=server[f"oip_{request.param}"])


def native(server, path, name):
    boundary = "mobilenet-serve-test"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + image(name) + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{server['http']}{path}", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.load(r)


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
    assert {o["name"] for o in meta["outputs"]} == {"boxes", "scores", "classes", "num_detections"}
    with pytest.raises(InferenceServerException):
        client.get_model_metadata("no_such_model")


def test_classification_extension_equals_the_native_top_k(triton, server):
    module, client = triton
    names = ["parrot.jpg", "cat_720p.jpg"]
    result = client.infer(CLASSIFIER, [image_input(module, *names)],
                          outputs=[requested(module, "classification", class_count=3)])
    classes = result.as_numpy("classification")
    assert classes.shape == (2, 3)
    for row, name in zip(classes, names):
        expected = native(server, f"/v1/classify?model={CLASSIFIER}&top_k=3", name)["classes"]
        assert [c.decode() for c in row] == [f"{c['score']:.6f}:{c['index']}:{c['label']}" for c in expected]


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


def test_a_bad_image_is_a_client_error(triton):
    module, client = triton
    data = module.InferInput("image", [1], "BYTES")
    data.set_data_from_numpy(np.array([b"not an image"], dtype=np.object_))
    with pytest.raises(InferenceServerException) as error:
        client.infer(CLASSIFIER, [data])
    expected = "415" if module is triton_http else "StatusCode.INVALID_ARGUMENT"
    assert error.value.status() == expected, error.value
