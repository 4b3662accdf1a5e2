"""The Open Inference Protocol through KServe's own Python SDK (`kserve` from PyPI), over REST and gRPC: health
and inference on an encoded image and on a raw input tensor, equal to the native API's answer."""
import asyncio

import numpy as np
import pytest
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

from conftest import CLASSIFIER, DETECTOR, image, model_sized, native


def image_request(model, name, **parameters):
    """The image as binary data: the REST client sends it in Triton's binary form, the gRPC one as raw contents
    (in JSON or `bytes_contents` the SDK would try to encode a JPEG as UTF-8 text)."""
    data = InferInput(name="image", shape=[1], datatype="BYTES")
    data.set_data_from_numpy(np.array([image(name)], dtype=np.object_), binary_data=True)
    return InferRequest(model_name=model, infer_inputs=[data], parameters=parameters or None)


def tensor_request(model, pixels, **parameters):
    """The model's own input tensor, UINT8 [1, H, W, 3], in the SDK's default form (JSON numbers over REST,
    typed contents over gRPC)."""
    data = InferInput(name="input", shape=[1, *pixels.shape], datatype="UINT8")
    data.set_data_from_numpy(pixels[np.newaxis])
    return InferRequest(model_name=model, infer_inputs=[data], parameters=parameters or None)


def run(coroutine):
    return asyncio.run(coroutine)


@pytest.fixture(params=["rest", "grpc"])
def call(request, server):
    """A function that sends an InferRequest over REST or gRPC and returns the answer's outputs by name."""
    if request.param == "rest":
        async def infer(model, request):
            client = InferenceRESTClient(RESTConfig(protocol="v2"))
            assert await client.is_server_ready(server["http"])
            assert await client.is_model_ready(server["http"], model)
            answer = await client.infer(server["http"], request, model_name=model)
            return {o.name: o.as_numpy() for o in answer.outputs}
    else:
        async def infer(model, request):
            client = InferenceGRPCClient(server["oip_grpc"])
            assert await client.is_server_ready()
            assert await client.is_model_ready(model)
            answer = await client.infer(request)
            return {o.name: o.as_numpy() for o in answer.outputs}
    return lambda model, request: run(infer(model, request))


def as_text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def test_classification_equals_the_native_top_k(call, server):
    name = "parrot.jpg"
    outputs = call(CLASSIFIER, image_request(CLASSIFIER, name, top_k=3))
    expected = native(server, f"/v1/classify?model={CLASSIFIER}&top_k=3", name)["classes"]
    assert [as_text(v) for v in outputs["classification"][0]] == \
        [f"{c['score']:.6f}:{c['index']}:{c['label']}" for c in expected]


def test_detection_equals_the_native_detections(call, server):
    name = "cats_and_dogs.jpg"
    outputs = call(DETECTOR, image_request(DETECTOR, name))
    expected = native(server, f"/v1/detect?model={DETECTOR}", name)["detections"]
    count = int(outputs["num_detections"][0])
    assert count == len(expected) > 0
    assert list(outputs["classes"][0][:count]) == [d["class_index"] for d in expected]


def test_a_raw_tensor_answers_as_the_same_pixels_sent_as_an_image(call, server):
    pixels, png = model_sized("parrot.jpg", 96)
    outputs = call(CLASSIFIER, tensor_request(CLASSIFIER, pixels, top_k=3))
    expected = native(server, f"/v1/classify?model={CLASSIFIER}&top_k=3", "parrot.png", png)["classes"]
    assert [as_text(v) for v in outputs["classification"][0]] == \
        [f"{c['score']:.6f}:{c['index']}:{c['label']}" for c in expected]
