"""The shipped models: name -> weights file in the models folder, with the weights' SHA-256, whose
first bytes every file carries to name the model that made it (bitstream.py).

Where the weights live: in the package itself, `pqcodec/models/` (beside this file), so a checkout,
an editable install (`pip install -e .`) and an installed wheel (`pip install pqcodec-*.whl`, in
site-packages) all find them; $PQCODEC_MODELS_DIR, if set, names another folder, used instead. Each
file is checked against the SHA-256 recorded here before use. A model may have other decoders beside
its own (e.g. a perceptual one, decoders.py): separate small files, listed with it, checked and
loaded on first use; and a model may be a head file whose base is another model's weights file
(v5: only the conditional head, its base v4's file beside it).

What a wheel carries (setup.cfg, [options.package_data]): the default model and what it needs,
pq-s8-m12k256-v5.safetensors (6.9 MB) + its base pq-s8-m12k256-v4.safetensors (30.5 MB) + the
perceptual decoder pq-s8-m12k256-v4-perceptual.safetensors (3.3 MB), with their model cards: a
34 MB wheel (40.7 MB installed) that encodes and decodes offline, and decodes v4's files too. The
older pq-s8-m12k256-v3 (42.5 MB, the default of pqcodec 0.4.0 and 0.5.0; its files still decode)
stays in the repository only: to decode such files with a wheel, point PQCODEC_MODELS_DIR at a
folder holding pq-s8-m12k256-v3.safetensors (a checkout's pqcodec/models; the variable replaces
the package's folder for every model, so that folder must hold the default model's files too). A
model whose files are missing or do not match is a one-line ModelFilesError naming the model and
the folder (errors.named leaves its message as it is: the model's problem, not the input's).
"""
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .bitstream import model_hash_of
from .errors import ModelFilesError, UnsupportedFileError
from .files import sha256_of  # noqa: F401  (also pqcodec.zoo.sha256_of, as eval and tests use it)

# the package's own models folder: the default of models_dir()
PACKAGE_MODELS_DIR = Path(__file__).resolve().parent / "models"
MODELS_DIR_VARIABLE = "PQCODEC_MODELS_DIR"


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
    default_level: int
    decoders: tuple[DecoderFile, ...] = ()
    base: str | None = None      # a head file's base: the ZOO name whose weights file it names (model.py)
    in_wheel: bool = True        # installed with the package (setup.cfg's package data), or only in a checkout


ZOO = {e.name: e for e in [
    # v4 plus the conditional head (pqcodec/models/pq-s8-m12k256-v5.md): a file of the head alone, its
    # base v4's weights beside it; its files are format 6. The perceptual decoder pairs with v4's
    # autoencoder, which v5 shares
    ZooEntry("pq-s8-m12k256-v5", "pq-s8-m12k256-v5.safetensors",
             "f2b5d9f9f7feef28d2e1e628b5763410353d787632f0035c78d20009a997067a", default_level=3,
             decoders=(DecoderFile("perceptual", "pq-s8-m12k256-v4-perceptual.safetensors",
                                   "ebf705e6afaf81e810f705f312a9cb838e9868cc29f75c69729b09f92d78365d"),),
             base="pq-s8-m12k256-v4"),
    # pqcodec 0.6.0-0.9.0's default: its files (formats 3-5) still decode
    ZooEntry("pq-s8-m12k256-v4", "pq-s8-m12k256-v4.safetensors",
             "41652e7b33abcb50bb7faecd26e5beaf0ce754cee7e1eb01c760fc9025a8a388", default_level=3,
             # the perceptual decoder (issue 13; pqcodec/models/pq-s8-m12k256-v4-perceptual.md): same files
             decoders=(DecoderFile("perceptual", "pq-s8-m12k256-v4-perceptual.safetensors",
                                   "ebf705e6afaf81e810f705f312a9cb838e9868cc29f75c69729b09f92d78365d"),)),
    # pqcodec 0.4.0 and 0.5.0's default: its files (format 3) still decode, with its weights (42.5 MB),
    # which only a checkout holds: a wheel leaves them out (PQCODEC_MODELS_DIR finds them)
    ZooEntry("pq-s8-m12k256-v3", "pq-s8-m12k256-v3.safetensors",
             "ba5c6133abe8efa39c0d5b3bf1fe3c481a1c697558b8145a3ed443579b15c7cd", default_level=3,
             in_wheel=False),
]}
DEFAULT_MODEL = "pq-s8-m12k256-v5"
# models earlier releases shipped, by the hash prefix their files carry: named by describe_model
# (their weights stay in the git history under models/, the models' folder before pqcodec/models/)
RETIRED = {"a945f74d": "pq-s8-m12k256 of pqcodec 0.2.0", "d7a48780": "pq-s8-m12k256-v2 of pqcodec 0.3.0"}


def models_dir() -> Path:
    """Where the shipped models' files are looked for: $PQCODEC_MODELS_DIR if set, else the
    package's own pqcodec/models/."""
    return Path(os.environ.get(MODELS_DIR_VARIABLE) or PACKAGE_MODELS_DIR)


@dataclass(frozen=True)
class ModelFile:
    """One file a shipped model codes with: what it is to the model, its name and SHA-256, and
    whether every coding needs it (a decoder's file is needed only by a decode with that decoder)."""
    what: str
    filename: str
    sha256: str
    required: bool = True


def files_needed(name: str) -> list[ModelFile]:
    """The files of the shipped model `name`: its weights, its base's (a head file's), then its
    other decoders' (optional)."""
    entry = ZOO[name]
    files = [ModelFile("weights", entry.filename, entry.sha256)]
    if entry.base:
        files.append(ModelFile("base weights", ZOO[entry.base].filename, ZOO[entry.base].sha256))
    return files + [ModelFile(f"{d.name} decoder", d.filename, d.sha256, required=False) for d in entry.decoders]


def _check_model_file(entry: ZooEntry, file: ModelFile) -> Path:
    """models_dir()/filename, or a one-line ModelFilesError naming the model, the file and the folder,
    and how to give it (PQCODEC_MODELS_DIR)."""
    what, filename, sha256 = file.what, file.filename, file.sha256
    folder = models_dir()
    path = folder / filename
    from_env = bool(os.environ.get(MODELS_DIR_VARIABLE))
    where = f"{folder} ({MODELS_DIR_VARIABLE})" if from_env else str(folder)
    if not path.is_file():
        if not from_env and not entry.in_wheel:
            raise ModelFilesError(
                f"model {entry.name}: its weights are not installed with this package ({filename} not in "
                f"{where}); set {MODELS_DIR_VARIABLE} to a folder holding {filename} and the other models' "
                "files, e.g. a pqcodec checkout's pqcodec/models")
        fix = (f"set {MODELS_DIR_VARIABLE} to a folder holding it, e.g. a pqcodec checkout's pqcodec/models, "
               "or unset it to use the installed models" if from_env else
               f"this installation is incomplete: reinstall pqcodec, or set {MODELS_DIR_VARIABLE} to a folder "
               "holding it, e.g. a pqcodec checkout's pqcodec/models")
        raise ModelFilesError(f"model {entry.name}: {what} file {filename} not found in {where}; {fix}")
    if sha256_of(path) != sha256:
        raise ModelFilesError(f"model {entry.name}: {path} is not the {what} file recorded for it (its SHA-256 "
                              f"differs from {sha256[:16]}...: a damaged or different file); reinstall pqcodec, "
                              f"or point {MODELS_DIR_VARIABLE} at the right files")
    return path


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


def load_model(name: str = DEFAULT_MODEL, coding_only: bool = False):
    """The PQCodecModel of a shipped model, its files checked; whole (with the float prior and head
    that training and research read) unless coding_only, as a Codec loads it."""
    from .model import PQCodecModel
    entry = ZOO.get(name)
    if entry is None:
        raise UnsupportedFileError(f"unknown model {name!r} (this pqcodec ships {', '.join(ZOO)})")
    # the weights and a head file's base: checked here, so that a missing or wrong one is the model's
    # one-line error (the decoders' files are checked on first use: codec.py)
    path, *_ = [_check_model_file(entry, f) for f in files_needed(name) if f.required]
    return PQCodecModel.load(path, coding_only=coding_only)


@lru_cache(maxsize=4)
def _load_codec(name: str, device: str):
    from .codec import Codec
    model = load_model(name, coding_only=True)
    entry = ZOO[name]
    codec = Codec(model, model_hash_of(entry.sha256), entry.default_level,
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
        model = PQCodecModel.load(p, search=(models_dir(),), coding_only=True)  # a head file's base: beside it or shipped
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
