#!/usr/bin/env python3
"""The input contract, measured: builds every kind of input tried (PIL modes, bit depths, ICC profiles,
frames, numpy arrays, paths, byte sources, coded files for decode), 64x48 pixels each, runs each
through `encode` and `decode` as a user would, and renders the table of docs/inputs.md: what pqcodec
did with each (coded as RGB or greyscale, with the values it coded; or the one-line error).

    python -m eval.input_contract                  # print the table (seconds)
    python -m eval.input_contract --write          # replace the table in docs/inputs.md
    python -m eval.input_contract --model shipped  # code with the shipped model (a minute), or WEIGHTS

It codes with a tiny random model by default (tests/fuzzing.py): nothing in the table depends on the
model but whether a case codes at all, which the shipped model gives the same. tests/test_inputs.py
renders the table and checks docs/inputs.md against it. ICC profiles and 16-bit RGB PNGs, which
Pillow cannot make, come from tests/input_builders.py.
"""
import argparse
import io
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, features

import pqcodec
from pqcodec.errors import PQCodecError
from pqcodec.image import load_image
from tests.fuzzing import make_weights  # tests/, in the checkout this runs from
from tests.input_builders import adobe_rgb_profile, linear_grey_profile, png_16bit, srgb_profile

from .common import ROOT

DOC = ROOT / "docs" / "inputs.md"
BEGIN, END = "<!-- begin table: eval/input_contract.py -->", "<!-- end table -->"
H, W = 48, 64


# -- pictures -----------------------------------------------------------------------------------------
def base_rgb() -> np.ndarray:
    """The 64x48 picture most cases are made from: smooth, fairly saturated colour ramps."""
    y, x = np.mgrid[0:H, 0:W]
    return np.stack([40 + 3 * x, 60 + 3 * y, 200 - 2 * x], -1).astype(np.uint8)


def base_grey() -> np.ndarray:
    return np.rint(base_rgb().mean(axis=2)).astype(np.uint8)


def file_bytes(img: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


# -- the cases ------------------------------------------------------------------------------------------
@dataclass
class Case:
    group: str
    label: str
    build: Callable[[Path], object]   # tmp folder -> the source handed to pqcodec
    rule: str                         # the contract this case shows
    decode: bool = False              # a source for pqcodec.decode (built from a coded file)


def _pil(mode_image: Callable[[], Image.Image]):
    return lambda tmp: mode_image()


def _rgb() -> Image.Image:
    return Image.fromarray(base_rgb())


def _grey() -> Image.Image:
    return Image.fromarray(base_grey())


def _with_alpha(img: Image.Image) -> Image.Image:
    img = img.copy()
    img.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, W, dtype=np.uint8), (H, 1))))
    return img


def _transparent_palette() -> Image.Image:
    p = _rgb().quantize(16)
    p.info["transparency"] = 0
    return Image.open(io.BytesIO(file_bytes(p, "PNG")))


def _frames(fmt: str, n: int = 3, **options) -> Callable[[Path], object]:
    def build(tmp: Path):
        frames = [Image.fromarray(np.roll(base_rgb(), 8 * i, axis=1)) for i in range(n)]
        path = tmp / f"frames{n}.{fmt.lower()}"
        frames[0].save(path, fmt, save_all=True, append_images=frames[1:], **options)
        return path
    return build


def _one_frame_of_animation(tmp: Path):
    img = Image.open(_frames("GIF")(tmp))
    img.seek(1)
    return img.copy()


def _file(name: str, data: bytes) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        (tmp / name).write_bytes(data)
        return tmp / name
    return build


def _tagged(img_fn: Callable[[], Image.Image], profile_fn: Callable[[], bytes], fmt="PNG") -> Callable[[Path], bytes]:
    return lambda tmp: file_bytes(img_fn(), fmt, icc_profile=profile_fn())


def _pgm_16bit(maxval: int) -> bytes:
    values = np.rint(base_grey().astype(np.float64) / 255 * maxval).astype(">u2")
    return f"P5 {W} {H} {maxval}\n".encode() + values.tobytes()


def _float_tiff(scale: float) -> Callable[[Path], bytes]:
    return lambda tmp: file_bytes(Image.fromarray((base_grey() / 255 * scale).astype(np.float32)), "TIFF")


def _array(fn: Callable[[], np.ndarray]):
    return lambda tmp: fn()


def _coded(tmp: Path) -> bytes:
    return (tmp / "coded.bin").read_bytes()


def cases() -> list[Case]:
    rgb, grey = base_rgb(), base_grey()
    g16 = grey.astype(np.uint16) * 257
    return [
        # PIL images by mode, handed to pqcodec.encode as they are
        Case("PIL mode", "1", _pil(lambda: _grey().convert("1")), "0 / 255, greyscale"),
        Case("PIL mode", "L", _pil(_grey), "as is"),
        Case("PIL mode", "LA", _pil(lambda: _with_alpha(_grey())), "alpha dropped"),
        Case("PIL mode", "La (premultiplied)", _pil(lambda: _with_alpha(_grey()).convert("La")),
             "un-premultiplied, alpha dropped (where alpha is 0, La itself has lost the grey)"),
        Case("PIL mode", "P", _pil(lambda: _rgb().quantize(16)), "palette colours"),
        Case("PIL mode", "P with transparency", _pil(_transparent_palette),
             "palette colours, transparency dropped"),
        Case("PIL mode", "RGB", _pil(_rgb), "as is"),
        Case("PIL mode", "RGBA", _pil(lambda: _with_alpha(_rgb())), "alpha dropped, colour kept"),
        Case("PIL mode", "CMYK (no profile)", _pil(lambda: _rgb().convert("CMYK")),
             "Pillow's naive CMYK to RGB"),
        Case("PIL mode", "YCbCr", _pil(lambda: _rgb().convert("YCbCr")), "converted to RGB"),
        Case("PIL mode", "LAB", _pil(lambda: Image.merge("LAB", [Image.fromarray(grey),
                                                                 Image.new("L", (W, H), 150),
                                                                 Image.new("L", (W, H), 100)])),
             "converted to sRGB (D65) by Pillow"),
        Case("PIL mode", "HSV", _pil(lambda: _rgb().convert("HSV")), "converted to RGB"),
        Case("PIL mode", "I, made in memory (fromarray of int32)",
             _pil(lambda: Image.fromarray(grey.astype(np.int32), "I")), "refused: no bit depth"),
        Case("PIL mode", "I;16", _pil(lambda: Image.fromarray(g16)), "value / 257"),
        Case("PIL mode", "F in [0, 1]", _pil(lambda: Image.fromarray((grey / 255).astype(np.float32))),
             "[0, 1]: value x 255"),
        Case("PIL mode", "F in [0, 255]", _pil(lambda: Image.fromarray(grey.astype(np.float32))),
             "refused: outside [0, 1]"),
        # files: bit depths
        Case("file", "8-bit grey PNG", lambda tmp: file_bytes(_grey(), "PNG"), "as is"),
        Case("file", "16-bit grey PNG", lambda tmp: file_bytes(Image.fromarray(g16), "PNG"), "value / 257"),
        Case("file", "16-bit grey PNG, brightest pixel 200",
             lambda tmp: file_bytes(Image.fromarray((grey.astype(np.uint16) * 200 // 255)), "PNG"),
             "by its depth: 200 / 257 rounds to 1"),
        Case("file", "8-bit RGB PNG", lambda tmp: file_bytes(_rgb(), "PNG"), "as is"),
        Case("file", "16-bit RGB PNG", lambda tmp: png_16bit(rgb.astype(np.uint16) * 257),
             "Pillow keeps the high byte"),
        Case("file", "16-bit PGM (maxval 1000)", lambda tmp: _pgm_16bit(1000),
             "Pillow scales to 0..65535 (mode I): value / 257"),
        Case("file", "32-bit integer TIFF in 0..65535 (mode I)",
             lambda tmp: file_bytes(Image.fromarray(g16.astype(np.int32), "I"), "TIFF"), "a file's mode I: 16-bit"),
        Case("file", "32-bit integer TIFF with negative values (mode I)",
             lambda tmp: file_bytes(Image.fromarray(grey.astype(np.int32) - 1000, "I"), "TIFF"),
             "refused: no white level"),
        Case("file", "float TIFF in [0, 1] (mode F)", _float_tiff(1.0), "[0, 1]: value x 255"),
        Case("file", "float TIFF in [0, 255] (mode F)", _float_tiff(255.0), "refused: outside [0, 1]"),
        Case("file", "CMYK JPEG, no profile", lambda tmp: file_bytes(_rgb().convert("CMYK"), "JPEG", quality=95),
             "Pillow's naive CMYK to RGB"),
        Case("file", "JPEG with EXIF orientation 6",
             lambda tmp: file_bytes(_rgb(), "JPEG", quality=95, exif=_rotated_exif()), "turned as viewers show it"),
        # colour profiles
        Case("ICC", "RGB PNG, sRGB profile", _tagged(_rgb, srgb_profile), "converted: sRGB to sRGB"),
        Case("ICC", "RGB PNG, Adobe RGB profile", _tagged(_rgb, adobe_rgb_profile),
             "converted to sRGB: more saturated"),
        Case("ICC", "RGB JPEG, Adobe RGB profile", _tagged(_rgb, adobe_rgb_profile, "JPEG"),
             "converted to sRGB"),
        Case("ICC", "grey PNG, linear grey profile", _tagged(_grey, linear_grey_profile),
             "converted to sRGB's curve: lighter"),
        Case("ICC", "grey PNG, sRGB profile", _tagged(_grey, srgb_profile), "read as (v, v, v) in sRGB"),
        Case("ICC", "RGB PNG, grey profile", _tagged(_rgb, linear_grey_profile), "refused: profile does not fit"),
        Case("ICC", "RGB PNG, broken profile", _tagged(_rgb, lambda: b"not an ICC profile" * 8),
             "refused: colours undefined"),
        # frames
        Case("frames", "animated GIF, 3 frames", _frames("GIF"), "refused, frames named"),
        Case("frames", "animated WebP, 3 frames", _frames("WEBP", lossless=True), "refused"),
        Case("frames", "APNG, 3 frames", _frames("PNG"), "refused"),
        Case("frames", "multi-page TIFF, 2 pages", _frames("TIFF", 2), "refused"),
        Case("frames", "GIF, 1 frame", _frames("GIF", 1), "coded"),
        Case("frames", "frame 1 of an animated GIF (seek, copy)", _one_frame_of_animation, "coded"),
        Case("frames", "MPO (JPEG + preview image)", _frames("MPO", 2), "primary image coded"),
        # numpy arrays
        Case("array", "uint8 (H, W, 3)", _array(lambda: rgb), "as is"),
        Case("array", "uint8 (H, W)", _array(lambda: grey), "greyscale"),
        Case("array", "uint8 (H, W, 1)", _array(lambda: grey[:, :, None]), "greyscale"),
        Case("array", "uint8 (H, W, 4)", _array(lambda: np.dstack([rgb, np.full((H, W), 7, np.uint8)])),
             "4th channel is alpha: dropped"),
        Case("array", "uint8 (H, W, 2)", _array(lambda: np.dstack([grey, grey])), "refused"),
        Case("array", "uint8 (3, H, W), channels first", _array(lambda: rgb.transpose(2, 0, 1)), "refused"),
        Case("array", "uint8 (0, 0, 3)", _array(lambda: np.zeros((0, 0, 3), np.uint8)), "refused: empty"),
        Case("array", "uint8, a strided view", _array(lambda: np.repeat(rgb, 2, axis=1)[:, ::2]), "as is"),
        Case("array", "uint16", _array(lambda: g16), "value / 257"),
        Case("array", "uint16, big-endian", _array(lambda: g16.astype(">u2")), "value / 257"),
        Case("array", "uint16, brightest value 200", _array(lambda: (grey.astype(np.uint16) * 200 // 255)),
             "by its dtype: value / 257"),
        Case("array", "float32 in [0, 1]", _array(lambda: (rgb / 255).astype(np.float32)), "value x 255"),
        Case("array", "float64 in [0, 1]", _array(lambda: rgb / 255), "value x 255"),
        Case("array", "float16 in [0, 1]", _array(lambda: (rgb / 255).astype(np.float16)), "value x 255"),
        Case("array", "float32 in [0, 255]", _array(lambda: rgb.astype(np.float32)), "refused"),
        Case("array", "float32 with a negative value", _array(lambda: _with_value(rgb / 255, -0.01)),
             "refused"),
        Case("array", "float32 with 1.0001", _array(lambda: _with_value(rgb / 255, 1.0001)), "refused"),
        Case("array", "float32 with NaN", _array(lambda: _with_value(rgb / 255, np.nan)), "refused"),
        Case("array", "float32 with inf", _array(lambda: _with_value(rgb / 255, np.inf)), "refused"),
        Case("array", "bool", _array(lambda: grey > 128), "0 / 255, greyscale"),
        Case("array", "int64 in 0..255", _array(lambda: rgb.astype(np.int64)), "refused: no bit depth"),
        Case("array", "int32", _array(lambda: rgb.astype(np.int32)), "refused: no bit depth"),
        Case("array", "complex64", _array(lambda: rgb.astype(np.complex64)), "refused"),
        Case("array", "object", _array(lambda: rgb.astype(object)), "refused"),
        # sources
        Case("source", "path as str", lambda tmp: str(_file("photo.png", file_bytes(_rgb(), "PNG"))(tmp)), "read"),
        Case("source", "pathlib.Path", _file("photo.png", file_bytes(_rgb(), "PNG")), "read"),
        Case("source", "missing path", lambda tmp: tmp / "missing.png", "refused"),
        Case("source", "folder", _folder, "refused"),
        Case("source", "empty file", _file("empty.png", b""), "refused"),
        Case("source", "text file", _file("notes.png", b"not an image\n"), "refused"),
        Case("source", "truncated PNG", _file("cut.png", _truncated(file_bytes(_rgb(), "PNG"))), "refused"),
        Case("source", "bytes", lambda tmp: file_bytes(_rgb(), "PNG"), "read"),
        Case("source", "bytearray", lambda tmp: bytearray(file_bytes(_rgb(), "PNG")), "read"),
        Case("source", "memoryview", lambda tmp: memoryview(file_bytes(_rgb(), "PNG")), "read"),
        Case("source", "bytes that are no image", lambda tmp: b"hello", "refused"),
        Case("source", "open(path, 'rb')", lambda tmp: open(_file("photo.png", file_bytes(_rgb(), "PNG"))(tmp), "rb"),
             "read from its start"),
        Case("source", "io.BytesIO just written (at its end)", _written_bytesio, "read from its start"),
        Case("source", "open(path) in text mode",
             lambda tmp: open(_file("photo.png", file_bytes(_rgb(), "PNG"))(tmp), encoding="latin-1"), "refused"),
        Case("source", "None", lambda tmp: None, "refused"),
        Case("source", "list of rows", lambda tmp: rgb.tolist(), "refused"),
        Case("source", "torch tensor (3, H, W)", _torch_tensor, "refused, with the conversion"),
        # coded files for pqcodec.decode
        Case("decode", "bytes", _coded, "decoded", decode=True),
        Case("decode", "memoryview", lambda tmp: memoryview(_coded(tmp)), "decoded", decode=True),
        Case("decode", "path as str", lambda tmp: str(tmp / "coded.bin"), "read bounded", decode=True),
        Case("decode", "pathlib.Path", lambda tmp: tmp / "coded.bin", "read bounded", decode=True),
        Case("decode", "open(path, 'rb')", lambda tmp: open(tmp / "coded.bin", "rb"), "read bounded", decode=True),
        Case("decode", "io.BytesIO at its end", lambda tmp: _at_end(io.BytesIO(_coded(tmp))), "read from its start",
             decode=True),
        Case("decode", "missing path", lambda tmp: tmp / "missing.bin", "refused", decode=True),
        Case("decode", "truncated file", lambda tmp: _coded(tmp)[:-5], "refused", decode=True),
        Case("decode", "None", lambda tmp: None, "refused", decode=True),
    ]


def _with_value(a: np.ndarray, value: float) -> np.ndarray:
    a = a.astype(np.float32)
    a[3, 5, 1] = value
    return a


def _folder(tmp: Path) -> Path:
    (tmp / "photos").mkdir(exist_ok=True)
    return tmp / "photos"


def _written_bytesio(tmp: Path) -> io.BytesIO:
    buf = io.BytesIO()
    _rgb().save(buf, "PNG")
    return buf


def _at_end(stream: io.BytesIO) -> io.BytesIO:
    stream.seek(0, io.SEEK_END)
    return stream


def _truncated(data: bytes) -> bytes:
    return data[:len(data) // 2]


def _rotated_exif() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return exif.tobytes()


def _torch_tensor(tmp: Path):
    import torch
    return torch.from_numpy(base_rgb()).permute(2, 0, 1).float() / 255


# -- running them -------------------------------------------------------------------------------------
def _close(source):
    if hasattr(source, "close") and not isinstance(source, Image.Image):
        source.close()


def coded_summary(rgb: np.ndarray, grey: bool) -> str:
    """What was coded: greyscale or RGB, value range, mean per channel, and for colour the mean
    saturation (max - min) / max, which shows a colour-space conversion."""
    lo, hi = int(rgb.min()), int(rgb.max())
    if grey:
        return f"grey {lo}..{hi}, mean {rgb[:, :, 0].mean():.1f}"
    r, g, b = rgb.reshape(-1, 3).mean(axis=0)
    top = rgb.max(axis=2).astype(np.float64)
    saturation = np.mean((top - rgb.min(axis=2)) / np.maximum(top, 1))
    return f"RGB {lo}..{hi}, mean {r:.1f} / {g:.1f} / {b:.1f}, saturation {saturation:.3f}"


def run_case(case: Case, encode, decode, tmp: Path) -> tuple[str, str]:
    """(what pqcodec did, the detail: the coded values or the error), as a user of the API meets it."""
    source = case.build(tmp)
    try:
        if case.decode:
            img = decode(source)
            return f"decoded: {img.mode} {img.size[0]}x{img.size[1]}", ""
        out = decode(encode(source))
    except PQCodecError as e:
        return "refused", f"{type(e).__name__}: {e}"
    finally:
        _close(source)
    coded = case.build(tmp)  # anew: the first one may have been read to its end
    try:
        summary = coded_summary(*load_image(coded))
    finally:
        _close(coded)
    return f"coded, decodes to {out.mode}", summary


def versions() -> str:
    """The libraries the table depends on (Pillow's decoders and LittleCMS, numpy's dtype names)."""
    lcms = features.version("littlecms2") if features.check("littlecms2") else "none"
    return f"Pillow {Image.__version__} (LittleCMS {lcms}), numpy {np.__version__}"


def table(codec) -> str:
    """The markdown table of every case, coded with `codec` (None: the shipped model through
    pqcodec.encode and pqcodec.decode)."""
    lines = [f"Made by `python -m eval.input_contract --write` with {versions()}; {W}x{H} inputs.", "",
             "| kind | input | result | coded values (0..255) or the error | rule |", "|---|---|---|---|---|"]
    encode, decode = (codec.encode, codec.decode) if codec else (pqcodec.encode, pqcodec.decode)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "coded.bin").write_bytes(encode(_rgb()))
        for case in cases():
            result, detail = run_case(case, encode, decode, tmp)
            detail = detail.replace(str(tmp) + "/", "").replace("|", "\\|")
            lines.append(f"| {case.group} | {case.label} | {result} | {detail} | {case.rule} |")
    return "\n".join(lines) + "\n"


def replace_table(doc: str, new_table: str) -> str:
    head, rest = doc.split(BEGIN, 1)
    return head + BEGIN + "\n" + new_table + END + rest.split(END, 1)[1]


def current_table(doc: str) -> str:
    return doc.split(BEGIN, 1)[1].split(END, 1)[0].lstrip("\n")


def main():
    ap = argparse.ArgumentParser(prog="python -m eval.input_contract", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="'shipped', or a weights file (default: a tiny random model)")
    ap.add_argument("--write", action="store_true", help=f"replace the table in {DOC.relative_to(ROOT)}")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: inputs this small only lose time to a thread pool)")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as d:
        if args.model == "shipped":
            codec = None
        else:
            codec = pqcodec.load_custom_codec(args.model or str(make_weights(Path(d) / "tiny.safetensors")))
        text = table(codec)
    if args.write:
        DOC.write_text(replace_table(DOC.read_text(), text))
        print(f"wrote the table of {text.count(chr(10)) - 4} cases into {DOC}")
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
