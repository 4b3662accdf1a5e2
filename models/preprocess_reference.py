"""Reference pre-processing for the server's fidelity test (server/tests/preprocess_fidelity.rs).

The upstream reference outputs (../shared/images/reference.json) were computed on images prepared by Pillow: a full
decode, `convert("RGB")`, then `resize((side, side), Image.BILINEAR)`. This writes exactly that, for every image of
the test set and every input side the model repository uses, as raw RGB8 files named `<image>_<side>.rgb`, so that
the Rust test can compare the server's own resized pixels with them value by value.

    python models/preprocess_reference.py [--images DIR] [--out DIR] [--sides 224,256,...]
"""

import argparse
import json
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


def repository_sides(repository: Path) -> list[int]:
    """Every square input side a served variant uses (all inputs here are square, resized by stretching)."""
    sides = set()
    for config in repository.glob("*/config.json"):
        spec = json.loads(config.read_text())["input"]
        if spec["width"] == spec["height"] and spec.get("resize", "stretch") == "stretch":
            sides.add(int(spec["width"]))
    return sorted(sides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "images")
    parser.add_argument("--out", type=Path, default=ROOT / "target" / "preprocess-reference")
    parser.add_argument("--repository", type=Path, default=ROOT / "models" / "repository")
    parser.add_argument("--sides", help="comma-separated sides (default: the repository's)")
    args = parser.parse_args()

    sides = [int(s) for s in args.sides.split(",")] if args.sides else repository_sides(args.repository)
    if not sides:
        raise SystemExit(f"no input sides found in {args.repository}; run `make models` first")
    args.out.mkdir(parents=True, exist_ok=True)
    images = sorted(p for p in args.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    for path in images:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        for side in sides:
            resized = rgb.resize((side, side), Image.BILINEAR)
            (args.out / f"{path.name}_{side}.rgb").write_bytes(resized.tobytes())
    print(f"wrote {len(images) * len(sides)} reference images ({len(images)} images x sides {sides}) to {args.out}")


if __name__ == "__main__":
    main()
