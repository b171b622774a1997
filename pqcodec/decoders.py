"""Alternative decoders of a model: the same tokens, another synthesis transform.

A perceptual decoder file (train/perceptual.py writes it) holds only the `decoder.*` tensors of one
main model, fine-tuned with an adversarial loss while the encoder, quantizer and prior stayed frozen,
so every .bin file of that model decodes with either decoder. Its safetensors metadata records

    format        "pqcodec-decoder"
    kind          the decoder's name ("perceptual")
    base_sha256   SHA-256 of the main weights file it was fine-tuned from (it pairs with no other)
    config        the main model's ModelConfig JSON (shapes)
    + free-form training notes (steps, losses)

Tensors may be stored in float16 (half the bytes); they are loaded as float32.
"""
from __future__ import annotations  # Decoder and torch below are names in signatures only

from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UnsupportedFileError

if TYPE_CHECKING:  # imported where used: the CLI reads DECODER_NAMES without importing torch
    import torch
    from .nets import Decoder

FORMAT = "pqcodec-decoder"
DEFAULT_DECODER = "mse"      # the main weights' own decoder
DECODER_NAMES = ("mse", "perceptual")


def save_decoder(decoder: Decoder, path: str | Path, kind: str, base_sha256: str, config_json: str,
                 dtype: torch.dtype | None = None, notes: dict | None = None):
    """Writes `decoder`'s tensors (as `decoder.<name>`, in `dtype`, float16 for None) and the pairing
    metadata."""
    import torch
    from safetensors.torch import save_file
    dtype = torch.float16 if dtype is None else dtype
    state = {f"decoder.{k}": v.detach().to("cpu", dtype).contiguous() for k, v in decoder.state_dict().items()}
    meta = {"format": FORMAT, "kind": kind, "base_sha256": base_sha256, "config": config_json,
            **{k: str(v) for k, v in (notes or {}).items()}}
    save_file(state, str(path), metadata=meta)


def read_metadata(path: str | Path) -> dict:
    from safetensors import safe_open
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own types on a file that is not one of its
        raise UnsupportedFileError(f"{path}: not a safetensors file ({' '.join(str(e).split())})") from None
    if meta.get("format") != FORMAT:
        raise UnsupportedFileError(f"{path}: not a pqcodec decoder file (metadata format is {meta.get('format')!r})")
    return meta


def load_decoder(path: str | Path, base_sha256: str, channels: int, latent_dim: int,
                 kind: str = "perceptual", padding: str = "zeros") -> Decoder:
    """The float32 Decoder in `path`, which must be a `kind` decoder fine-tuned from the main weights
    whose SHA-256 is `base_sha256`, with the shapes of a Decoder(channels, latent_dim) and the main
    model's `padding`."""
    from safetensors.torch import load_file
    from .nets import Decoder
    from .numerics import float32_default
    meta = read_metadata(path)
    if meta.get("kind") != kind:
        raise UnsupportedFileError(f"{path}: is a {meta.get('kind')!r} decoder, not a {kind!r} one")
    if meta.get("base_sha256") != base_sha256:
        raise UnsupportedFileError(f"{path}: was fine-tuned from model {meta.get('base_sha256', '?')[:16]}..., "
                                   f"not from this model {base_sha256[:16]}...; it does not pair with it")
    with float32_default():
        decoder = Decoder(channels, latent_dim, padding)
    wanted = decoder.state_dict()
    state = {k.removeprefix("decoder."): v for k, v in load_file(str(path)).items()}
    if set(state) != set(wanted) or any(state[k].shape != wanted[k].shape for k in wanted):
        raise UnsupportedFileError(f"{path}: its tensors are not those of this model's decoder")
    decoder.load_state_dict({k: v.float() for k, v in state.items()})
    return decoder.eval()
