"""The shipped models: id (stored in every file's header) -> weights file in models/.

Weights are found in $PQCODEC_MODELS_DIR if set, else in the project's models/ folder, and checked
against the SHA-256 recorded here before use.
"""
import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .errors import UnsupportedFileError


@dataclass(frozen=True)
class ZooEntry:
    model_id: int
    name: str
    filename: str
    sha256: str
    default_quality: int


ZOO = {
    1: ZooEntry(1, "pq-s8-m4k256", "pq-s8-m4k256.safetensors",
                "844c522cf99bc3a1806f70c475d55433f89443d5cdc72a7554e07e661d3db39d", default_quality=2),
}
DEFAULT_MODEL_ID = 1
CUSTOM_MODEL_ID = 0  # weights given by path; the decoder must be given the same path


def models_dir() -> Path:
    return Path(os.environ.get("PQCODEC_MODELS_DIR") or Path(__file__).resolve().parent.parent / "models")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=4)
def load_codec(model_id: int = DEFAULT_MODEL_ID):
    """The Codec of a shipped model (cached)."""
    from .codec import Codec
    from .model import PQCodecModel
    entry = ZOO.get(model_id)
    if entry is None:
        raise UnsupportedFileError(f"unknown model id {model_id} (this pqcodec ships ids {sorted(ZOO)}; "
                                   f"id {CUSTOM_MODEL_ID} means weights given with --model)")
    path = models_dir() / entry.filename
    if not path.is_file():
        raise UnsupportedFileError(f"weights of model {entry.name} not found at {path} "
                                   "(set PQCODEC_MODELS_DIR to the folder holding them)")
    if _sha256(path) != entry.sha256:
        raise UnsupportedFileError(f"{path} does not match the SHA-256 recorded for model {entry.name}")
    return Codec(PQCodecModel.load(path), model_id, entry.default_quality)


@lru_cache(maxsize=4)
def load_custom_codec(path: str):
    """A Codec from a weights file outside the zoo (research use); files it makes carry model id 0."""
    from .codec import Codec
    from .model import PQCodecModel
    p = Path(path)
    if not p.is_file():
        raise UnsupportedFileError(f"{p}: no such weights file")
    try:
        return Codec(PQCodecModel.load(p), CUSTOM_MODEL_ID)
    except Exception as e:  # safetensors raises its own types on a non-weights file
        raise UnsupportedFileError(f"{p}: not pqcodec weights ({e})") from None
