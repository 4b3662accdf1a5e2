"""Build the served model repository from the manifest: fetch -> convert -> graph surgery -> verify -> publish.

Usage: prepare.py [--only VARIANT ...] [--report] [--mirror DIR] [--cache DIR] [--repository DIR] [--images DIR]
Settings default to the env vars the Makefile exports (MODEL_MIRROR, MODEL_CACHE, MODEL_REPOSITORY, TEST_IMAGES;
MODEL_OFFLINE=1 forbids downloads). A verified build of a variant is cached under MODEL_CACHE/built/<variant>/<key>,
key = hash(source sha256s, the variant's manifest entry, this folder's code, tool versions); a rerun only republishes.
A variant's `serving` hints are not part of the build: publishing writes them into config.json, so retuning them
never rebuilds a graph.
Repository folders are written beside their final place and renamed in, so none is ever half-written. Beside them:
index.json, verification.json and tflite_reference.json (the TFLite interpreter's answers, for the server's tests)."""
import argparse
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
import time
import tomllib
import warnings
from pathlib import Path

# tf.lite.Interpreter is used only to check against upstream; its deprecation notice is noise here.
warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")

from common import MODELS_DIR, PrepareError, Settings, sha256_file, sha256_text

CODE_FILES = ("common.py", "fetch.py", "convert.py", "graph_surgery.py", "anchors.py", "graph_stats.py", "images.py",
              "verify.py", "prepare.py")
# Manifest keys written at publish time, not part of a build: changing them never rebuilds a graph.
PUBLISH_ONLY = ("serving", "quality")
TOOLS = ("tf2onnx", "tensorflow-cpu", "onnx", "onnxruntime", "numpy", "pillow")


def load_manifest(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            m = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise PrepareError(None, f"cannot read manifest {path}: {e}") from None
    names = [v["name"] for v in m["variant"]]
    if len(set(names)) != len(names):
        raise PrepareError(None, f"duplicate variant names in {path}")
    return m


def check_entry(v: dict) -> None:
    """Manifest fields every variant must state, checked before anything is fetched or built."""
    dataset = v.get("attributes", {}).get("dataset")
    # The label set the answers are in: `model=auto` only moves between variants of the default's dataset, so a
    # variant without one could be mistaken for any other.
    if not isinstance(dataset, str) or not dataset:
        raise PrepareError(v["name"], "manifest attributes.dataset is missing: name the label set the answers are in "
                                      "(e.g. \"imagenet\", \"coco\")")


def _artifact(manifest, name, variant, settings):
    import fetch
    spec = manifest["artifacts"].get(name)
    if spec is None:
        raise PrepareError(variant, f"artifact {name} is not declared in the manifest")
    return fetch.fetch(name, spec, variant, settings)


def labels_for(v: dict, manifest: dict, settings: Settings) -> tuple[list[str], Path | None]:
    spec = v["labels"]
    if "inline" in spec:
        return list(spec["inline"]), None
    path = _artifact(manifest, spec["artifact"], v["name"], settings)
    lines = [l.strip() for l in path.read_text(encoding="utf-8").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if "first" in spec:
        lines = lines[: spec["first"]]
    if "prepend" in spec:
        lines = [spec["prepend"]] + lines  # e.g. coco_labels.txt is indexed by COCO id - 1; column 0 is background
    return lines, path


def build_key(v: dict, sources: list[Path]) -> str:
    code = [sha256_file(MODELS_DIR / f) for f in CODE_FILES]
    tools = [importlib.metadata.version(t) for t in TOOLS]
    build = {k: x for k, x in v.items() if k not in PUBLISH_ONLY}
    return sha256_text(json.dumps([build, [sha256_file(p) for p in sources], code, tools], sort_keys=True))[:24]


def make_config(v: dict, model, params: int, madds: int) -> dict:
    inp = dict(v["input"])
    inp.setdefault("mean", [0.0, 0.0, 0.0])  # only read for float32 inputs; identity values for uint8
    inp.setdefault("std", [1.0, 1.0, 1.0])
    return {
        "name": v["name"], "task": v["task"], "description": v["description"],
        "model_file": "model.onnx", "labels_file": "labels.txt",
        "attributes": dict(v["attributes"], parameters=params, multiply_adds=madds),
        "input": {"name": model.graph.input[0].name, **inp},
        "output": v["output"],
    }


def build_graph(v: dict, source: Path, settings: Settings):
    """Converted + edited + checked ONNX model for variant v."""
    import onnx

    import anchors
    import convert
    import graph_surgery
    converted = convert.convert(v["recipe"], source, v["name"], settings)
    model = onnx.load(str(converted))
    for step, kwargs in v["recipe"].get("steps", []):
        fn = graph_surgery.STEPS.get(step)
        if fn is None:
            raise PrepareError(v["name"], f"unsupported recipe step {step!r}")
        kwargs = dict(kwargs)
        if "from_tflite" in kwargs:
            kwargs["anchors"] = anchors.tflite_anchors(source, kwargs.pop("from_tflite"))
        if "from_graphdef" in kwargs:
            kwargs["anchors"] = anchors.graphdef_anchors(source, **kwargs.pop("from_graphdef"))
        if "bias_from_tflite" in kwargs:
            kwargs["bias"] = anchors.tflite_tensor(source, kwargs.pop("bias_from_tflite"))
        try:
            model = fn(model, **kwargs)
        except (ValueError, KeyError, StopIteration) as e:
            raise PrepareError(v["name"], f"recipe step {step} failed: {e}") from None
    try:
        return graph_surgery.finalize(model)
    except Exception as e:  # onnx ValidationError / InferenceError: the edited graph is not valid
        raise PrepareError(v["name"], f"edited graph fails ONNX checks: {str(e).splitlines()[0][:300]}") from None


def build_variant(v, manifest, settings, top1_cache) -> Path:
    """Return a cached, verified build folder for v (building it if needed)."""
    import onnx

    import graph_stats
    import verify
    name = v["name"]
    source = _artifact(manifest, v["source"], name, settings)
    labels, labels_path = labels_for(v, manifest, settings)
    key = build_key(v, [source] + ([labels_path] if labels_path else []))
    built = settings.cache / "built" / name / key
    if (built / "verification.json").is_file():
        return built
    built.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=built.parent, prefix=".tmp-"))
    try:
        model = build_graph(v, source, settings)
        params, madds = graph_stats.count(model)
        onnx.save(model, str(tmp / "model.onnx"))
        cfg = make_config(v, model, params, madds)
        (tmp / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        checks = verify.run_checks(v, cfg, tmp / "model.onnx", labels, source, settings, top1_cache)
        failed = [c for c in checks if c["fatal"] and not c["ok"]]
        if failed:
            raise PrepareError(name, "verification failed: " + "; ".join(f"{c['check']}: {c['detail']}" for c in failed))
        art = manifest["artifacts"][v["source"]]
        provenance = {"source": v["source"], "source_sha256": sha256_file(source), "build_key": key,
                      "origin": f"PyPI {art['pypi']}=={art['version']}" if "pypi" in art else art["url"]}
        # verification.json is written last: its presence marks a complete, verified build
        (tmp / "verification.json").write_text(json.dumps({"provenance": provenance, "checks": checks}, indent=2))
        shutil.rmtree(built, ignore_errors=True)
        os.rename(tmp, built)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for stale in built.parent.iterdir():  # older builds of this variant can never be used again
        if stale.name != key and not stale.name.startswith("."):
            shutil.rmtree(stale, ignore_errors=True)
    return built


def quality_of(v: dict, record: dict, reference_images: int) -> dict | None:
    """The variant's quality figure for config.json: as the manifest publishes it, or the agreement with the
    task's default that verification measured (in `record`, the build's verification.json)."""
    q = v.get("quality")
    if q is None:
        return None
    if "measured" not in q:
        return {"metric": q["metric"], "value": q["value"], "source": q["source"]}
    key = q["measured"]
    value = next((c[key] for c in record["checks"] if key in c), None)
    spec = v.get("verify", {})
    other = spec.get("compare_top1_with") or spec.get("compare_mask_with") or spec.get("compare_detections_with")
    if value is None or other is None:
        raise PrepareError(v["name"], f"quality: verification measured no {key} against another variant")
    what = {"top1_agreement": "top-1 agreement", "detection_f1": "detection F1"}.get(key, key.replace("_", " "))
    if "compare_detections_with" in spec:  # a reference.json key, not a variant: the default's upstream answers
        other = f"the reference detections (reference.json `{other}`)"
    return {"metric": f"{what} with {other} on the {reference_images} reference images (%)",
            "value": round(100 * value, 1), "source": "measured by make models (models/verify.py)"}


def auto_ladders(manifest: dict, configs: dict) -> dict:
    """Per task, the variants `model=auto` may pick, best first: those with the default's dataset (as their
    published config.json states it) and a quality figure; published figures before measured agreements, each by
    value, the default first on a tie, then the larger model (more multiply-adds)."""
    ladders = {}
    for task, default in manifest["defaults"].items():
        if default not in configs:
            continue
        # Read from the published configs, not the manifest: that is what the server sees. A folder left from a
        # build before `dataset` existed has none and is left out rather than guessed.
        dataset = configs[default]["attributes"].get("dataset")
        ranked = [c for c in configs.values()
                  if c["task"] == task and c.get("quality") and dataset
                  and c["attributes"].get("dataset") == dataset]
        ranked.sort(key=lambda c: (c["quality"]["source"].startswith("measured"), -c["quality"]["value"],
                                   c["name"] != default, -c["attributes"]["multiply_adds"]))
        ladders[task] = [c["name"] for c in ranked]
    return ladders


def publish(built: Path, dest: Path, serving: dict, quality: dict | None) -> None:
    """Copy a build into the repository atomically (temp folder beside dest, then rename), with the variant's
    serving hints and quality figure written into its config.json."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".tmp-{dest.name}-"))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the server may run as another user
    try:
        for f in ("model.onnx", "labels.txt"):
            shutil.copy2(built / f, tmp / f)
        cfg = json.loads((built / "config.json").read_text())
        published = {**cfg, "serving": serving, **({"quality": quality} if quality else {})}
        (tmp / "config.json").write_text(json.dumps(published, indent=2) + "\n")
        old = None
        if dest.exists():
            old = dest.parent / f".old-{dest.name}-{os.getpid()}"
            os.rename(dest, old)
        os.rename(tmp, dest)
        if old:
            shutil.rmtree(old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def tflite_reference(records: dict) -> dict:
    """{variant: {image: {"top5": [[index, label, score], ...]}}}: the TFLite interpreter's own answers, kept by
    the TFLite checks of verify.py, for the server's tests to compare with (REPOSITORY.md)."""
    return {name: c["tflite_top5"] for name, r in records.items() for c in r["checks"] if "tflite_top5" in c}


def write_json_atomic(path: Path, data) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def prepare(settings: Settings, only: list[str] | None = None) -> int:
    manifest = load_manifest(settings.manifest)
    variants = [v for v in manifest["variant"] if not only or v["name"] in only]
    if only and len(variants) != len(set(only)):
        raise PrepareError(None, f"unknown variant(s): {sorted(set(only) - {v['name'] for v in variants})}")
    from verify import Reference
    records, errors, top1_cache = {}, [], {}
    reference_images = len(Reference(settings.images).names)
    for v in variants:
        t0 = time.monotonic()
        try:
            check_entry(v)
            built = build_variant(v, manifest, settings, top1_cache)
            records[v["name"]] = json.loads((built / "verification.json").read_text())
            quality = quality_of(v, records[v["name"]], reference_images)
            publish(built, settings.repository / v["name"], v.get("serving", {}), quality)
            print(f"ok   {v['name']:32s} {time.monotonic() - t0:6.1f}s", flush=True)
        except PrepareError as e:
            errors.append(v["name"])
            print(f"FAIL {e}", file=sys.stderr, flush=True)
    present = [v["name"] for v in manifest["variant"] if (settings.repository / v["name"] / "config.json").is_file()]
    if present:
        defaults = {t: n for t, n in manifest["defaults"].items() if n in present}
        configs = {n: json.loads((settings.repository / n / "config.json").read_text()) for n in present}
        write_json_atomic(settings.repository / "index.json", {"format": 1, "variants": present, "defaults": defaults,
                                                              "auto": auto_ladders(manifest, configs)})
        # Verification records beside the variants (the server ignores this file): read by --report.
        vpath = settings.repository / "verification.json"
        old = json.loads(vpath.read_text()) if vpath.is_file() else {}
        merged = {k: val for k, val in {**old, **records}.items() if k in present}
        write_json_atomic(vpath, merged)
        # The upstream runtime's answers for the server's tests (a --only run keeps the others' from before).
        write_json_atomic(settings.repository / "tflite_reference.json", tflite_reference(merged))
    if errors:
        print(f"prepare: {len(errors)} variant(s) failed: {', '.join(errors)}", file=sys.stderr)
        return 1
    return 0


def report(settings: Settings) -> int:
    import report as rep
    manifest = load_manifest(settings.manifest)
    configs = {}
    for v in manifest["variant"]:
        p = settings.repository / v["name"] / "config.json"
        if p.is_file():
            configs[v["name"]] = json.loads(p.read_text())
    vpath = settings.repository / "verification.json"
    records = json.loads(vpath.read_text()) if vpath.is_file() else {}
    print("## Size and cost (counted from the served ONNX graphs, per image)\n")
    print(rep.size_table(manifest["variant"], configs))
    print("\n## Verification\n")
    print(rep.verification_table({k: records[k]["checks"] for k in (v["name"] for v in manifest["variant"]) if k in records}))
    return 0 if len(configs) == len(manifest["variant"]) else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mirror"), ap.add_argument("--cache"), ap.add_argument("--repository")
    ap.add_argument("--images"), ap.add_argument("--manifest")
    ap.add_argument("--offline", action="store_true", default=None, help="never download (also MODEL_OFFLINE=1)")
    ap.add_argument("--only", action="append", metavar="VARIANT", help="build only these variants")
    ap.add_argument("--report", action="store_true", help="print the size/cost and verification tables")
    a = ap.parse_args(argv)
    settings = Settings.from_env(mirror=a.mirror, cache=a.cache, repository=a.repository, images=a.images,
                                 manifest=a.manifest, offline=a.offline)
    try:
        return report(settings) if a.report else prepare(settings, a.only)
    except PrepareError as e:
        print(f"prepare: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
