"""Format conversion of verified artifacts to ONNX (tf2onnx for TFLite and TF frozen graphs), cached by input hash.

Owns: the converter invocation and the converted-graph cache. The cache key is the source sha256 plus the converter
arguments and the converter's version, so a changed recipe or a tf2onnx upgrade can never reuse a stale graph."""
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import onnx

from common import PrepareError, Settings, sha256_file, sha256_text

OPSET = 17
CONVERTERS = ("tflite", "graphdef", "onnx")


def _tf2onnx_args(recipe: dict, source: Path) -> list[str]:
    kind = recipe["converter"]
    if kind == "tflite":
        args = ["--tflite", str(source)]
        if recipe.get("dequantize"):
            args.append("--dequantize")  # float weights: folds the uint8 weights + scales into float32 initializers
        return args
    if kind == "graphdef":
        # Frozen TF graph: the recipe names the cut points (tensor names), see manifest.
        return ["--graphdef", str(source), "--inputs", recipe["inputs"], "--outputs", recipe["outputs"]]
    raise AssertionError(kind)


def convert(recipe: dict, source: Path, variant: str, settings: Settings) -> Path:
    """Return the path of the cached ONNX conversion of `source` according to `recipe`."""
    kind = recipe.get("converter")
    if kind not in CONVERTERS:
        raise PrepareError(variant, f"unsupported conversion {kind!r} (supported: {', '.join(CONVERTERS)})")
    if kind == "onnx":
        # Already ONNX (ST files): no conversion, but prove it parses so a corrupt file is named here.
        try:
            onnx.checker.check_model(onnx.load(str(source)))
        except Exception as e:  # onnx raises DecodeError / ValidationError / ...; all mean "not a usable graph"
            raise PrepareError(variant, f"{source.name} is not a valid ONNX model: {str(e).splitlines()[0][:200]}") from None
        return source
    args = _tf2onnx_args(recipe, source)
    key_args = [a if a != str(source) else "<src>" for a in args]
    key = sha256_text(json.dumps([sha256_file(source), key_args, OPSET,
                                  importlib.metadata.version("tf2onnx"), importlib.metadata.version("tensorflow-cpu")]))
    out = settings.cache / "converted" / f"{key[:32]}.onnx"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmp_out = Path(tmp) / "model.onnx"
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
        proc = subprocess.run([sys.executable, "-m", "tf2onnx.convert", *args, "--output", str(tmp_out),
                               "--opset", str(OPSET)], capture_output=True, text=True, env=env)
        if proc.returncode != 0 or not tmp_out.is_file():
            lines = [l for l in proc.stderr.splitlines() if l.strip()]
            errs = [l for l in lines if "Error" in l or "error" in l] or lines
            raise PrepareError(variant, f"tf2onnx conversion of {source.name} failed: {(errs or ['?'])[-1][:300]}")
        tmp_out.replace(out)  # atomic: the cache never holds a half-written graph
    return out
