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
from .zoo import DEFAULT_MODEL_ID, load_codec, load_custom_codec

__version__ = "0.1.0"


def encode(image, quality: int | None = None, steps: int = DEFAULT_STEPS, model: str | None = None) -> bytes:
    """Compress an image (path, bytes, file object, PIL image or uint8 array) into .bin bytes.
    quality: 1 (smallest) .. number of levels of the model; default: the model's default.
    model: path of a weights file outside the zoo (the decoder must be given it too)."""
    codec = load_custom_codec(str(model)) if model else load_codec(DEFAULT_MODEL_ID)
    return codec.encode(image, quality, steps)


def decode(data: bytes, model: str | None = None):
    """Decompress .bin bytes into a PIL image (RGB, or L for a greyscale source)."""
    from .container import unpack
    header, _ = unpack(data)
    if model:
        codec = load_custom_codec(str(model))
    elif header.model_id == 0:
        raise UnsupportedFileError("file was made with weights given by path: pass the same weights (model=...)")
    else:
        codec = load_codec(header.model_id)
    return codec.decode(data)


__all__ = ["encode", "decode", "Codec", "PQCodecModel", "ModelConfig", "load_codec", "load_custom_codec",
           "PQCodecError", "CorruptFileError", "UnsupportedFileError", "ImageError", "DEFAULT_STEPS"]
