"""Locating and authenticating upstream artifacts: mirror -> cache -> upstream URL (or an installed PyPI wheel).

Owns: where each source file comes from and that it is byte-for-byte the published one (sha256). Nothing downstream
ever reads an artifact that did not pass the hash check."""
import importlib.metadata
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from common import PrepareError, Settings, sha256_file

DOWNLOAD_TIMEOUT_S = 20  # a dead network should fail fast, not hang the build


def _check(path: Path, expected: str, variant: str, origin: str) -> Path:
    actual = sha256_file(path)
    if actual != expected:
        raise PrepareError(variant, f"sha256 mismatch for {path.name} ({origin} {path}): expected {expected}, got {actual}")
    return path


def _from_pypi(spec: dict, variant: str) -> Path:
    # The PyPI artifact is pinned in requirements.txt; here we only insist the installed version is the pinned one.
    try:
        dist = importlib.metadata.distribution(spec["pypi"])
    except importlib.metadata.PackageNotFoundError:
        raise PrepareError(variant, f"PyPI package {spec['pypi']}=={spec['version']} is not installed "
                                    f"(needed for {spec['path']}); run `make venv`") from None
    if dist.version != spec["version"]:
        raise PrepareError(variant, f"PyPI package {spec['pypi']} is {dist.version}, manifest pins {spec['version']}")
    path = Path(dist.locate_file(spec["path"]))
    if not path.is_file():
        raise PrepareError(variant, f"{spec['path']} missing from installed {spec['pypi']}=={spec['version']}")
    return _check(path, spec["sha256"], variant, f"PyPI {spec['pypi']}=={spec['version']}")


def _download(url: str, dest: Path, variant: str, name: str) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Download beside the destination and rename, so an interrupted download never looks like a cached file.
    with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False, prefix=".part-") as tmp:
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as r:
                shutil.copyfileobj(r, tmp)
        except (urllib.error.URLError, OSError, ValueError) as e:
            Path(tmp.name).unlink(missing_ok=True)
            raise PrepareError(variant, f"artifact {name} not in mirror or cache, and download from {url} "
                                        f"failed: {getattr(e, 'reason', e)}") from None
    Path(tmp.name).replace(dest)


def fetch(name: str, spec: dict, variant: str, settings: Settings) -> Path:
    """Return a local path to artifact `name`, verified against its manifest sha256."""
    if "pypi" in spec:
        return _from_pypi(spec, variant)
    mirrored = settings.mirror / name
    if mirrored.is_file():
        # A corrupt mirror copy is an error, not a reason to silently fall back: someone should fix the mirror.
        return _check(mirrored, spec["sha256"], variant, "mirror")
    cached = settings.cache / "artifacts" / spec["sha256"] / name
    if cached.is_file():
        return _check(cached, spec["sha256"], variant, "cache")
    if settings.offline:
        raise PrepareError(variant, f"artifact {name} not found in mirror {settings.mirror} or cache "
                                    f"{cached.parent}, and network use is disabled (MODEL_OFFLINE)")
    _download(spec["url"], cached, variant, name)
    try:
        return _check(cached, spec["sha256"], variant, "download")
    except PrepareError:
        cached.unlink(missing_ok=True)  # never keep a bad download in the cache
        raise
