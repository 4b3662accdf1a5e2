"""Test-image loading and preprocessing, exactly as the server does it (REPOSITORY.md `input`).

Owns: turning an image file into the model input tensor for a config's `input` block. Verification must feed the
graph what the server will feed it, otherwise agreement would prove nothing about serving."""
from pathlib import Path

import numpy as np
from PIL import Image


def load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def to_input(image: Image.Image, spec: dict) -> np.ndarray:
    """One HWC (or CHW) tensor without the batch dimension."""
    if spec["resize"] == "center_crop":
        w, h = image.size
        side = int(round(min(w, h) * 0.875))
        left, top = (w - side) // 2, (h - side) // 2
        image = image.crop((left, top, left + side, top + side))
    elif spec["resize"] != "stretch":
        raise ValueError(f"unknown resize {spec['resize']!r}")
    x = np.asarray(image.resize((spec["width"], spec["height"]), Image.BILINEAR), dtype=np.uint8)
    if spec["dtype"] == "float32":
        x = (x.astype(np.float32) - np.float32(spec["mean"])) / np.float32(spec["std"])
    if spec["layout"] == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x)


def batch(paths, spec: dict) -> np.ndarray:
    return np.stack([to_input(load_rgb(p), spec) for p in paths])
