"""pqcodec: a learned image codec (product-quantized autoencoder + masked-image-modeling prior).

    import pqcodec
    data = pqcodec.encode("photo.png", quality=2)   # bytes
    img = pqcodec.decode(data)                      # PIL.Image

What `encode` takes and what it does with each kind of image: docs/inputs.md. Bad input raises a
one-line PQCodecError naming the source (InputTypeError, also a TypeError, for a wrong type).
`pqcodec.decode(data, decoder="perceptual")` decodes the same file with the perceptual decoder.
For research: `pqcodec.load_codec()` gives the shipped model's `Codec` (its `.model` holds the
encoder, quantizer, decoder and prior as torch modules).
"""
from .coding.schedule import DEFAULT_STEPS
from .config import ModelConfig
from .errors import (CorruptFileError, ImageError, InputTypeError, ModelFilesError, PQCodecError, UnsupportedFileError,
                     named)
from .request import EncodeRequest, RequestError
from .sources import coded_input
from .zoo import DEFAULT_MODEL, codec_for_file, codec_to_encode, load_codec, load_custom_codec

__version__ = "0.19.0"
# the networks' classes, imported (with torch) on first use: `pqcodec --help` and `pqcodec info` need
# neither, and start in a fraction of torch's import time
_LAZY = {"Codec": "codec", "PQCodecModel": "model"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)


def encode(image, quality: int | None = None, steps: int | None = DEFAULT_STEPS, model: str | None = None,
           *, name: str | None = None, max_bytes: int | None = None, bpp: float | None = None,
           rd_lambda: float = 0.0, generative: bool = False, effort: int = 0, flat: bool = True,
           device=None) -> bytes:
    """Compress an image into .bin bytes. image: a path (str or pathlib.Path), file contents (bytes,
    bytearray, memoryview), a binary file object, a PIL image, or a numpy array (uint8, uint16, bool, or
    float in [0, 1]; (H, W) or (H, W, 1|3|4)); docs/inputs.md has the whole contract.
    quality: 1 (smallest) .. number of levels of the model; None: the model's default.
    steps: coding steps per window (None: DEFAULT_STEPS).
    model: path of a weights file outside the zoo (the file names it by hash; decode needs it too).
    name: what errors call the image (default: its path, the file object's name, <bytes>, ...).
    max_bytes or bpp (instead of quality): the best quality whose file is at most max_bytes, or
    floor(bpp * H * W / 8), bytes (docs/ratecontrol.md; between levels a level per window or RDOQ,
    below the lowest level the image is shrunk, so 200 bytes works); ratecontrol.RateError when
    none fits.
    generative (with a size): below the lowest level, send part of the shrunken image and let the
    decoder draw the rest from the prior (PQ-MIM's hybrid mode).
    rd_lambda: RDOQ's λ at `quality` (0: plain quantization; the decoder is the same).
    effort (with a quality): 0..10 steps of encoder-side latent refinement (refine.py; 0: none). The
    codes never decode farther from the image than effort 0's, in a slightly larger file (Kodak, level
    3: 1 step +0.26 dB for 0.9 % more bytes, 5 steps +0.43 dB for 3.9 %; docs/quality.md); the decoder
    is the same.
    flat: send the image's flat 8x8 blocks, which the decoder paints back exact (flat.py; False: a
    file without them, as pqcodec 0.10.0 wrote).
    device: where the networks run: "cpu" (None: the default), "cuda", "cuda:N" or "auto" (CUDA where
    torch sees it); the file is the same bytes on every device (devices.py)."""
    request = EncodeRequest(quality, max_bytes, bpp, steps, effort, rd_lambda, generative, flat).check()
    return request.file_of(codec_to_encode(model, device), image, name).data


def decode(source, model: str | None = None, *, name: str | None = None, decoder: str = "mse", device=None):
    """Decompress a .bin file into a PIL image (RGB, or L for a greyscale source), with the shipped
    model the file names, or the weights file `model` (which must be the one the file names).
    source: the file's bytes (bytes, bytearray, memoryview), its path (str or pathlib.Path), or a binary
    file object; paths and file objects are read bounded (no longer than a pqcodec file can be).
    name: what errors call the file (default: its path, the file object's name, <bytes>).
    decoder: "mse" (the model's own decoder, the default) or "perceptual" (sharper, more natural
    texture at low rates; the shipped model's second decoder, docs/perceptual.md); the same file
    decodes with either. A model without it is a one-line UnsupportedFileError.
    device: as `encode`'s; a file decodes to the same tokens on every device, and to pixels within
    a level or so (the synthesis transform is float)."""
    from .bitstream import unpack
    data, name = coded_input(source, name)
    with named(name):
        header, _ = unpack(data)
        codec = codec_for_file(header.model_hash, model, device)
    return codec.decode(data, name=name, decoder=decoder)  # an unknown or missing decoder fails first


__all__ = ["encode", "decode", "Codec", "PQCodecModel", "ModelConfig", "EncodeRequest", "load_codec", "load_custom_codec",
           "PQCodecError", "RequestError", "CorruptFileError", "UnsupportedFileError", "ModelFilesError", "ImageError",
           "InputTypeError", "DEFAULT_STEPS", "DEFAULT_MODEL"]
