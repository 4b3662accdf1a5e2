"""Shared plumbing for the model-preparation step: the error type, settings (env vars and their defaults), hashing.

Every expected failure is raised as PrepareError naming the variant (and the file), so prepare.py can print one clear
line and exit non-zero instead of a traceback."""
import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent
REPO_ROOT = MODELS_DIR.parent


class PrepareError(Exception):
    """An expected failure (missing/corrupt artifact, bad recipe, failed verification); message is user-facing."""

    def __init__(self, variant: str | None, message: str):
        self.variant = variant
        super().__init__(f"[{variant}] {message}" if variant else message)


@dataclass(frozen=True)
class Settings:
    mirror: Path
    cache: Path
    repository: Path
    images: Path
    manifest: Path
    offline: bool  # never touch the network (MODEL_OFFLINE=1): missing artifacts fail at once

    @staticmethod
    def from_env(**overrides) -> "Settings":
        # Same defaults as the Makefile, so running prepare.py by hand behaves like `make models`.
        env = os.environ
        s = dict(
            mirror=Path(env.get("MODEL_MIRROR") or REPO_ROOT.parent / "shared" / "models"),
            cache=Path(env.get("MODEL_CACHE") or Path.home() / ".cache" / "mobilenet-serve" / "models"),
            repository=Path(env.get("MODEL_REPOSITORY") or REPO_ROOT / "models" / "repository"),
            images=Path(env.get("TEST_IMAGES") or REPO_ROOT.parent / "shared" / "images"),
            manifest=MODELS_DIR / "manifest.toml",
            offline=env.get("MODEL_OFFLINE", "") not in ("", "0"),
        )
        s.update({k: v for k, v in overrides.items() if v is not None})
        resolved = {k: (Path(v).resolve() if isinstance(v, (str, Path)) else v) for k, v in s.items()}
        return Settings(**resolved)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@contextlib.contextmanager
def quiet_stderr():
    """Send fd 2 to /dev/null: TensorFlow's C++ start-up chatter (absl logs emitted before logging is configured,
    so TF_CPP_MIN_LOG_LEVEL cannot silence it) would otherwise bury prepare's one-line-per-variant output.
    Only wrap imports / constructors: Python exceptions still propagate normally."""
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def tensorflow():
    """Import TensorFlow quietly (heavy: only imported when a check or an anchor table needs it)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with quiet_stderr():
        import tensorflow as tf
    return tf
