"""pqcodec: a learned image codec (product-quantized autoencoder + masked-image-modeling prior).

    import pqcodec
    data = pqcodec.encode("photo.png", quality=2)   # bytes
    img = pqcodec.decode(data)                      # PIL.Image

For research: `pqcodec.load_codec()` gives the shipped model's `Codec` (its `.model` holds the
encoder, quantizer, decoder and prior as torch modules).
"""
from .codec import Codec, DEFAULT_STEPS
from .errors import CorruptFileError, ImageError, PQCodecError, UnsupportedFileError
from .model import ModelConfig, PQCodecModel
from .zoo import DEFAULT_MODEL, codec_for_file, load_codec, load_custom_codec

__version__ = "0.4.0"


def encode(image, quality: int | None = None, steps: int = DEFAULT_STEPS, model: str | None = None) -> bytes:
    """Compress an image (path, bytes, file object, PIL image or uint8 array) into .bin bytes.
    quality: 1 (smallest) .. number of levels of the model; default: the model's default.
    model: path of a weights file outside the zoo (the file names it by hash; decode needs it too)."""
    codec = load_custom_codec(str(model)) if model else load_codec(DEFAULT_MODEL)
    return codec.encode(image, quality, steps)


def decode(data: bytes, model: str | None = None):
    """Decompress .bin bytes into a PIL image (RGB, or L for a greyscale source), with the shipped
    model the file names, or the weights file `model` (which must be the one the file names)."""
    from .bitstream import unpack
    header, _ = unpack(data)
    return codec_for_file(header.model_hash, model).decode(data)


__all__ = ["encode", "decode", "Codec", "PQCodecModel", "ModelConfig", "load_codec", "load_custom_codec",
           "PQCodecError", "CorruptFileError", "UnsupportedFileError", "ImageError", "DEFAULT_STEPS"]
