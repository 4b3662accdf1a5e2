"""Bad input gives one clear error naming the variant and the file, fast, and leaves nothing half-written."""
import shutil
import time
import tomllib

import pytest

from common import PrepareError
from conftest import run_prepare

VARIANT = "mobilenet_v2_1.0_224"
SOURCE = "mobilenet_v2_1.0_224_quant.tflite"


def _replace(sandbox, name, data: bytes):
    path = sandbox["mirror"] / name
    path.unlink()
    path.write_bytes(data)
    return path


def _assert_nothing_written(sandbox):
    repo = sandbox["repository"]
    assert not repo.exists() or not [p for p in repo.iterdir() if p.name != "index.json"]


def test_sha256_mismatch_names_file_and_both_hashes(sandbox, manifest, capsys):
    good = (sandbox["mirror"] / SOURCE).read_bytes()
    _replace(sandbox, SOURCE, good[:1000] + b"\x00" + good[1001:])  # one corrupted byte, same length
    assert run_prepare(sandbox, "--only", VARIANT) == 1
    err = capsys.readouterr().err
    assert VARIANT in err and SOURCE in err and "sha256 mismatch" in err
    assert manifest["artifacts"][SOURCE]["sha256"] in err
    import hashlib
    assert hashlib.sha256((sandbox["mirror"] / SOURCE).read_bytes()).hexdigest() in err
    assert "Traceback" not in err
    _assert_nothing_written(sandbox)


def test_truncated_artifact_is_a_hash_error(sandbox, capsys):
    good = (sandbox["mirror"] / SOURCE).read_bytes()
    _replace(sandbox, SOURCE, good[: len(good) // 2])
    assert run_prepare(sandbox, "--only", VARIANT) == 1
    err = capsys.readouterr().err
    assert f"[{VARIANT}]" in err and SOURCE in err and "sha256 mismatch" in err
    _assert_nothing_written(sandbox)


def _manifest_with(sandbox, settings, artifact, sha):
    """A manifest copy whose hash for `artifact` is `sha` (a bad upstream publish: hash matches, content is junk)."""
    text = settings.manifest.read_text()
    m = tomllib.loads(text)
    text = text.replace(m["artifacts"][artifact]["sha256"], sha)
    path = sandbox["mirror"].parent / "manifest.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("variant,artifact", [("ssd_mobilenet_v2_fpnlite_256", "ssd_mobilenet_v2_fpnlite_10_256_int8.onnx"),
                                              (VARIANT, SOURCE)])
def test_corrupt_artifact_with_matching_hash_fails_in_conversion(sandbox, settings, capsys, variant, artifact):
    import hashlib
    junk = (sandbox["mirror"] / artifact).read_bytes()[:4096]
    _replace(sandbox, artifact, junk)
    manifest = _manifest_with(sandbox, settings, artifact, hashlib.sha256(junk).hexdigest())
    assert run_prepare(sandbox, "--only", variant, "--manifest", str(manifest)) == 1
    err = capsys.readouterr().err
    assert f"[{variant}]" in err and artifact in err
    assert "not a valid ONNX model" in err or "conversion" in err
    assert "Traceback" not in err
    _assert_nothing_written(sandbox)


def test_missing_artifact_offline_fails_fast_and_clearly(sandbox, capsys):
    (sandbox["mirror"] / SOURCE).unlink()
    t0 = time.monotonic()
    assert run_prepare(sandbox, "--only", VARIANT, "--offline") == 1
    assert time.monotonic() - t0 < 10
    err = capsys.readouterr().err
    assert f"[{VARIANT}]" in err and SOURCE in err and "not found in mirror" in err
    _assert_nothing_written(sandbox)


def test_missing_artifact_unreachable_url_fails_fast(sandbox, settings, capsys):
    """No mirror copy, no cache, network attempted: an unresolvable host must give a clear error, not a hang."""
    (sandbox["mirror"] / SOURCE).unlink()
    m = tomllib.loads(settings.manifest.read_text())
    text = settings.manifest.read_text().replace(m["artifacts"][SOURCE]["url"], f"http://artifacts.invalid/{SOURCE}")
    manifest = sandbox["mirror"].parent / "manifest.toml"
    manifest.write_text(text)
    t0 = time.monotonic()
    assert run_prepare(sandbox, "--only", VARIANT, "--manifest", str(manifest)) == 1
    assert time.monotonic() - t0 < 30
    err = capsys.readouterr().err
    assert f"[{VARIANT}]" in err and SOURCE in err and "download from http://artifacts.invalid" in err
    assert not list((sandbox["cache"] / "artifacts").rglob(SOURCE)) if (sandbox["cache"] / "artifacts").exists() else True


def test_missing_labels_file(sandbox, capsys):
    (sandbox["mirror"] / "imagenet_labels.txt").unlink()
    assert run_prepare(sandbox, "--only", VARIANT, "--offline") == 1
    err = capsys.readouterr().err
    assert f"[{VARIANT}]" in err and "imagenet_labels.txt" in err
    _assert_nothing_written(sandbox)


def test_unsupported_conversion(settings, tmp_path):
    import convert
    with pytest.raises(PrepareError, match=r"\[some_variant\] unsupported conversion 'caffe'"):
        convert.convert({"converter": "caffe"}, tmp_path / "x", "some_variant", settings)


def test_unknown_variant_is_an_error(sandbox, capsys):
    assert run_prepare(sandbox, "--only", "no_such_variant") == 1
    assert "no_such_variant" in capsys.readouterr().err


def test_variant_without_dataset_is_refused_before_any_work(sandbox, settings, capsys):
    """attributes.dataset is what keeps `model=auto` inside one label set: a variant must state it."""
    text = settings.manifest.read_text()
    start = text.index(f'name = "{VARIANT}"')
    line = text.index("attributes = ", start)
    end = text.index("\n", line)
    assert ', dataset = "imagenet"' in text[line:end]
    manifest = sandbox["mirror"].parent / "manifest.toml"
    manifest.write_text(text[:line] + text[line:end].replace(', dataset = "imagenet"', "") + text[end:])
    t0 = time.monotonic()
    assert run_prepare(sandbox, "--only", VARIANT, "--manifest", str(manifest), "--offline") == 1
    assert time.monotonic() - t0 < 10
    err = capsys.readouterr().err
    assert f"[{VARIANT}]" in err and "attributes.dataset is missing" in err and "Traceback" not in err
    _assert_nothing_written(sandbox)
