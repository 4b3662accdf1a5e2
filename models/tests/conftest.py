"""Shared fixtures: import path for models/*.py, the prepared repository, and throw-away mirrors/caches.

Tests that break things always work on copies under tmp_path; the real repository and cache are only read."""
import os
import sys
from pathlib import Path

import pytest

MODELS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(MODELS))

from common import Settings  # noqa: E402


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings.from_env()


@pytest.fixture(scope="session")
def manifest(settings):
    import prepare
    return prepare.load_manifest(settings.manifest)


@pytest.fixture
def sandbox(tmp_path, settings):
    """An empty cache and repository plus a mirror holding links to the real mirror's files (so tests can corrupt,
    truncate or remove single files without touching the real mirror)."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for f in settings.mirror.iterdir():
        if f.is_file():
            os.symlink(f, mirror / f.name)
    return dict(mirror=mirror, cache=tmp_path / "cache", repository=tmp_path / "repository")


def run_prepare(sandbox, *extra):
    import prepare
    args = ["--mirror", str(sandbox["mirror"]), "--cache", str(sandbox["cache"]),
            "--repository", str(sandbox["repository"]), *extra]
    return prepare.main(args)
