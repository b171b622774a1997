"""The shipped models: name -> weights file in models/, with the weights' SHA-256, whose first bytes
every file carries to name the model that made it (bitstream.py).

Weights are found in $PQCODEC_MODELS_DIR if set, else in the project's models/ folder, and checked
against the SHA-256 recorded here before use. A model may have other decoders beside its own (e.g. a
perceptual one, decoders.py): separate small files, listed with it, checked and loaded on first use.
"""
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .bitstream import model_hash_of
from .errors import UnsupportedFileError
from .files import sha256_of  # noqa: F401  (also pqcodec.zoo.sha256_of, as eval and tests use it)


@dataclass(frozen=True)
class DecoderFile:
    """Another decoder of a shipped model: its name (`decode(..., decoder=name)`), file and SHA-256."""
    name: str
    filename: str
    sha256: str


@dataclass(frozen=True)
class ZooEntry:
    name: str
    filename: str
    sha256: str
    default_quality: int
    decoders: tuple[DecoderFile, ...] = ()


ZOO = {e.name: e for e in [
    # v4 plus the conditional head (models/pq-s8-m12k256-v5.md): a file of the head alone, its base
    # v4's weights beside it; its files are format 6. The perceptual decoder pairs with v4's
    # autoencoder, which v5 shares
    ZooEntry("pq-s8-m12k256-v5", "pq-s8-m12k256-v5.safetensors",
             "f2b5d9f9f7feef28d2e1e628b5763410353d787632f0035c78d20009a997067a", default_quality=3,
             decoders=(DecoderFile("perceptual", "pq-s8-m12k256-v4-perceptual.safetensors",
                                   "ebf705e6afaf81e810f705f312a9cb838e9868cc29f75c69729b09f92d78365d"),)),
    # pqcodec 0.6.0-0.9.0's default: its files (formats 3-5) still decode
    ZooEntry("pq-s8-m12k256-v4", "pq-s8-m12k256-v4.safetensors",
             "41652e7b33abcb50bb7faecd26e5beaf0ce754cee7e1eb01c760fc9025a8a388", default_quality=3,
             # the perceptual decoder (issue 13; models/pq-s8-m12k256-v4-perceptual.md): same files
             decoders=(DecoderFile("perceptual", "pq-s8-m12k256-v4-perceptual.safetensors",
                                   "ebf705e6afaf81e810f705f312a9cb838e9868cc29f75c69729b09f92d78365d"),)),
    # pqcodec 0.4.0 and 0.5.0's default: its files (format 3) still decode
    ZooEntry("pq-s8-m12k256-v3", "pq-s8-m12k256-v3.safetensors",
             "ba5c6133abe8efa39c0d5b3bf1fe3c481a1c697558b8145a3ed443579b15c7cd", default_quality=3),
]}
DEFAULT_MODEL = "pq-s8-m12k256-v5"
# models earlier releases shipped, by the hash prefix their files carry: named by describe_model
# (their weights stay in the git history under models/)
RETIRED = {"a945f74d": "pq-s8-m12k256 of pqcodec 0.2.0", "d7a48780": "pq-s8-m12k256-v2 of pqcodec 0.3.0"}


def models_dir() -> Path:
    return Path(os.environ.get("PQCODEC_MODELS_DIR") or Path(__file__).resolve().parent.parent / "models")


def describe_model(model_hash: bytes) -> str:
    """What a file's model field names: a shipped model, one an earlier release shipped, or neither."""
    entry = shipped_model_for(model_hash)
    if entry:
        return entry.name
    retired = RETIRED.get(model_hash.hex())
    return f"{retired}; not shipped now" if retired else "not shipped: weights given by path"


def shipped_model_for(model_hash: bytes) -> ZooEntry | None:
    """The shipped model whose weights a file's model field names, if any."""
    return next((e for e in ZOO.values() if model_hash_of(e.sha256) == model_hash), None)


def load_codec(name: str = DEFAULT_MODEL, device=None):
    """The Codec of a shipped model (cached), its networks on `device` (devices.py; default CPU)."""
    from .devices import resolve_device
    return _load_codec(name, resolve_device(device))


@lru_cache(maxsize=4)
def _load_codec(name: str, device: str):
    from .codec import Codec
    from .model import PQCodecModel
    entry = ZOO.get(name)
    if entry is None:
        raise UnsupportedFileError(f"unknown model {name!r} (this pqcodec ships {', '.join(ZOO)})")
    path = models_dir() / entry.filename
    if not path.is_file():
        raise UnsupportedFileError(f"weights of model {entry.name} not found at {path} "
                                   "(set PQCODEC_MODELS_DIR to the folder holding them)")
    if sha256_of(path) != entry.sha256:
        raise UnsupportedFileError(f"{path} does not match the SHA-256 recorded for model {entry.name}")
    codec = Codec(PQCodecModel.load(path), model_hash_of(entry.sha256), entry.default_quality,
                  weights_sha256=entry.sha256, name=f"model {entry.name}")
    for d in entry.decoders:
        codec.add_decoder(d.name, models_dir() / d.filename, d.sha256)
    return codec.to(device)


def load_custom_codec(path: str, device=None):
    """A Codec from a weights file outside the zoo (research use; cached); its files name it by hash
    too. device: as load_codec."""
    from .devices import resolve_device
    return _load_custom_codec(str(path), resolve_device(device))


@lru_cache(maxsize=4)
def _load_custom_codec(path: str, device: str):
    from .codec import Codec
    from .model import PQCodecModel
    p = Path(path)
    if not p.is_file():
        raise UnsupportedFileError(f"{p}: no such weights file")
    try:
        model = PQCodecModel.load(p, search=(models_dir(),))  # a head file's base: beside it or shipped
    except Exception as e:  # safetensors raises its own types on a non-weights file
        raise UnsupportedFileError(f"{p}: not pqcodec weights ({e})") from None
    sha = sha256_of(p)
    return Codec(model, model_hash_of(sha), weights_sha256=sha, name=str(p)).to(device)


def codec_to_encode(weights: str | None = None, device=None):
    """The Codec that encodes: the weights file given (research use), else the default model; its
    networks on `device` (devices.py)."""
    return load_custom_codec(str(weights), device) if weights else load_codec(DEFAULT_MODEL, device)


def codec_for_file(model_hash: bytes, weights: str | None = None, device=None):
    """The Codec that decodes a file whose model field is `model_hash`: the weights given, which must
    be the ones named, or else the shipped model so named; its networks on `device` (devices.py)."""
    if weights:
        codec = load_custom_codec(str(weights), device)
        if codec.model_hash != model_hash:
            raise UnsupportedFileError(f"file was made with model {model_hash.hex()}, but {weights} is "
                                       f"model {codec.model_hash.hex()}")
        return codec
    entry = shipped_model_for(model_hash)
    if entry is None:
        raise UnsupportedFileError(f"file was made with model {model_hash.hex()} ({describe_model(model_hash)}); "
                                   f"this pqcodec does not ship it ({', '.join(ZOO)}): give its weights with --model")
    return load_codec(entry.name, device)
