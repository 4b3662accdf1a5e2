"""The server every third-party client test talks to, started once for the session, and the native API's
answers they are compared with."""
import io
import json
import os
import pathlib
import socket
import subprocess
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

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


@pytest.fixture(scope="session")
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


def native(server, path, name, data=None):
    """The native API's answer for the image `name` (or for `data`, sent under that file name)."""
    data = image(name) if data is None else data
    boundary = "mobilenet-serve-test"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{server['http']}{path}", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.load(r)


def model_sized(name, side):
    """The image `name` resized to the model's side: its RGB8 pixels (H, W, 3) and a PNG of the same pixels, so
    that a raw input tensor and an encoded image carry exactly the same model input."""
    with Image.open(io.BytesIO(image(name))) as opened:
        resized = opened.convert("RGB").resize((side, side), Image.BILINEAR)
    png = io.BytesIO()
    resized.save(png, format="PNG")
    return np.asarray(resized, dtype=np.uint8), png.getvalue()
