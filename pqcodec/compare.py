"""pqcodec against JPEG, WebP and AVIF at the same file size (`pqcodec compare IMAGE ... -o report.html`).

For each image, pqcodec codes it first, at a quality level or to a size (rate control: at most N
bytes, ratecontrol.py); its file's byte count is then the budget of every other codec: JPEG, WebP and
AVIF (Pillow) are each coded at the highest quality setting whose file is at most that many bytes,
found by bisection over the setting (a file is kept only if it was coded and measured, so no codec
ever gets more bytes than pqcodec). A codec whose smallest file is still larger is reported as such,
with that size, and is left out of the slider. Every decoder the model has (`Codec.decoders()`:
"mse", and "perceptual" where the model carries one) decodes pqcodec's file: the same bytes.

What is measured per codec: the file's bytes and bpp (rate from file bytes), RGB PSNR and MS-SSIM
against the input (metrics.py), the time of one encode at the chosen setting (for pqcodec with a size,
the whole rate-control search) and of one decode. The page (compare_page.py) shows the decoded pixels
as lossless PNGs, so a browser shows exactly what each decoder produced.
"""
import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, features

from .errors import PQCodecError
from .formats import is_image_name
from .image import image_bytes, load_image, to_pil
from .metrics import ms_ssim, psnr
from .request import EncodeRequest
from .words import counted


@dataclass(frozen=True)
class PillowCodec:
    """A classic codec as Pillow writes it: quality settings lowest..highest (higher: larger files)."""
    name: str
    fmt: str
    lowest: int
    highest: int
    options: tuple = ()
    feature: str = ""  # PIL.features name that says whether this Pillow has it

    def available(self) -> bool:
        return not self.feature or bool(features.check(self.feature))

    def encode(self, img: Image.Image, quality: int) -> bytes:
        buf = io.BytesIO()
        img.save(buf, self.fmt, quality=quality, **dict(self.options))
        return buf.getvalue()


# The settings eval/baselines.py sweeps (JPEG optimised Huffman tables, WebP's slowest and best
# method, AVIF at speed 4), over each codec's whole quality range.
PILLOW_CODECS = (
    PillowCodec("JPEG", "JPEG", 1, 100, (("optimize", True),), "jpg"),
    PillowCodec("WebP", "WEBP", 0, 100, (("method", 6),), "webp"),
    PillowCodec("AVIF", "AVIF", 0, 100, (("speed", 4),), "avif"),
)


@dataclass
class CodecResult:
    """One codec's result on one image. decoded is None when the codec has no file to show: not in
    this Pillow, or its smallest file is larger than pqcodec's (`note` says which)."""
    codec: str
    setting: str = ""
    num_bytes: int | None = None
    decoded: Image.Image | None = None
    psnr: float | None = None
    ms_ssim: float | None = None
    encode_s: float | None = None
    decode_s: float | None = None
    note: str = ""
    is_pqcodec: bool = False

    @property
    def shown(self) -> bool:
        return self.decoded is not None


@dataclass
class Comparison:
    """Every codec on one image; rows[0] is pqcodec with its first decoder, whose bytes are the budget."""
    name: str
    width: int
    height: int
    original: Image.Image
    pqcodec_request: str
    rows: list[CodecResult] = field(default_factory=list)

    @property
    def budget(self) -> int:
        return self.rows[0].num_bytes

    def bpp(self, num_bytes: int) -> float:
        return 8 * num_bytes / (self.width * self.height)


def expand_inputs(names) -> list[Path]:
    """The images to compare: files as given, and for a folder every file under it (recursively,
    sorted) whose extension is one Pillow reads. A missing input or an empty folder is a one-line
    PQCodecError naming it."""
    paths = []
    for name in names:
        p = Path(name)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and is_image_name(f))
            if not found:
                raise PQCodecError(f"{name}: no images in this folder (files with an extension Pillow reads)")
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        elif p.exists():
            raise PQCodecError(f"{name}: not a regular file")
        else:
            raise PQCodecError(f"{name}: no such file or folder")
    return paths


def steps_per_image(codec) -> int:
    """Progress units for one image: pqcodec (each decoder) and each Pillow codec."""
    return len(_decoders(codec)) + len(PILLOW_CODECS)


def compare_image(codec, source, name: str, request: EncodeRequest, progress=None) -> Comparison:
    """Codes `source` (any image load_image takes; errors name it `name`) with pqcodec as `request`
    says and every Pillow codec in at most pqcodec's bytes. progress(): called once per codec done."""
    tick = progress or (lambda: None)
    rgb, grey = load_image(source, name)
    original = to_pil(rgb, grey)
    H, W = rgb.shape[:2]
    start = time.perf_counter()
    encoded = request.file_of(codec, original, name)
    data, setting, encode_s = encoded.data, encoded.setting, time.perf_counter() - start
    result = Comparison(name, W, H, original, request.describe(codec, H, W))
    for decoder in _decoders(codec):
        start = time.perf_counter()
        decoded = codec.decode(data, name=name) if decoder == "mse" else codec.decode(data, name=name, decoder=decoder)
        decode_s = time.perf_counter() - start
        label = "pqcodec" if decoder == "mse" else f"pqcodec ({decoder})"
        result.rows.append(_measured(CodecResult(label, setting, len(data), decoded, encode_s=encode_s, decode_s=decode_s,
                                           is_pqcodec=True, note="sets the size" if decoder == "mse" else
                                           "the same file, another decoder"), rgb))
        tick()
    for pillow_codec in PILLOW_CODECS:
        result.rows.append(coded_within(pillow_codec, original, rgb, len(data)))
        tick()
    return result


def _decoders(codec) -> tuple[str, ...]:
    """The decoders the model has: ("mse",), and "perceptual" where it carries one (Codec.decoders;
    a Codec without the method has the first only)."""
    return tuple(getattr(codec, "decoders", lambda: ("mse",))())


def _measured(row: CodecResult, rgb: np.ndarray) -> CodecResult:
    decoded = np.asarray(row.decoded.convert("RGB"))
    row.psnr, row.ms_ssim = psnr(rgb, decoded), ms_ssim(rgb, decoded)
    return row


def coded_within(pc: PillowCodec, img: Image.Image, rgb: np.ndarray, budget: int) -> CodecResult:
    """`pc` at the highest setting whose file is at most `budget` bytes, by bisection over its
    settings (file sizes grow with the setting, not always strictly: the file kept is always one
    coded and measured here, so the bisection may miss a larger setting that fits, never exceed)."""
    if not pc.available():
        return CodecResult(pc.name, note=f"not available: this Pillow has no {pc.name} encoder")
    try:
        return _bisect(pc, img, rgb, budget)
    except (OSError, ValueError) as e:  # beyond the format's limits (WebP: 16383 px a side)
        return CodecResult(pc.name, note=f"Pillow cannot write this image as {pc.name} ({e})")


def _bisect(pc: PillowCodec, img: Image.Image, rgb: np.ndarray, budget: int) -> CodecResult:
    def code(q: int) -> tuple[bytes, float]:
        start = time.perf_counter()
        data = pc.encode(img, q)
        return data, time.perf_counter() - start

    data, seconds = code(pc.lowest)
    if len(data) > budget:
        return CodecResult(pc.name, f"quality {pc.lowest}", len(data), note=(
            f"cannot match: its smallest file (quality {pc.lowest}) is {counted(len(data), 'byte')}, "
            f"more than pqcodec's {budget}; not shown"))
    best = (pc.lowest, data, seconds)
    fits, too_big = pc.lowest, pc.highest + 1
    while too_big - fits > 1:
        q = (fits + too_big) // 2
        data, seconds = code(q)
        if len(data) <= budget:
            fits, best = q, (q, data, seconds)
        else:
            too_big = q
    q, data, encode_s = best
    start = time.perf_counter()
    with Image.open(io.BytesIO(data)) as f:
        decoded = f.convert(img.mode)  # RGB, or L for a greyscale source
    decode_s = time.perf_counter() - start
    under = budget - len(data)
    note = f"{counted(under, 'byte')} under pqcodec's" if under else "exactly pqcodec's bytes"
    if q == pc.highest:
        note += " (its highest setting)"
    return _measured(CodecResult(pc.name, f"quality {q}", len(data), decoded, encode_s=encode_s, decode_s=decode_s,
                           note=note), rgb)


def png_bytes(img: Image.Image) -> bytes:
    """A decoded image as a PNG file, for the page: lossless, so it shows the decoded pixels."""
    return image_bytes(img, "PNG")


def compare_all(paths: list[Path], codec, request: EncodeRequest, progress: bool = True):
    """compare_image on each path, with a progress bar (tqdm, on stderr) when `progress`. Returns
    (the comparisons made, one line `NAME: reason` per image that failed: unreadable, or too small a
    size for rate control; it is left out, the others go on; Pillow's warnings about an image as
    one line each, `NAME: Pillow: ...`). Internal errors (bugs) propagate."""
    from tqdm import tqdm
    from .jobs import failure_line, folded_warnings, is_internal
    done, failed, warned = [], [], []
    with tqdm(total=len(paths) * steps_per_image(codec), desc="compare", unit="codec", disable=not progress,
              leave=False) as bar:
        for path in paths:
            bar.set_postfix_str(path.name)
            lines = []
            try:
                with folded_warnings(lines):
                    done.append(compare_image(codec, path, str(path), request, progress=lambda: bar.update()))
            except Exception as e:
                if is_internal(e):
                    raise
                failed.append(failure_line(str(path), e))
                bar.update(steps_per_image(codec) - (bar.n % steps_per_image(codec)))
            warned.extend(f"{path}: {line}" for line in lines)
    return done, failed, warned
