#!/usr/bin/env python3
"""Write the golden files: small .bin files of a shipped model with their token CRC and a reference of
their decoded pixels (NAME.pixels.png beside NAME.bin: eval/golden_pixels.py), into
tests/data/golden/v<version>/. tests/test_golden.py decodes every version's files on every test run,
so no change can silently break files that exist: tokens and bytes must match exactly, pixels within
golden_pixels' bounds of the reference (the synthesis transform is float; pixels differ by a level
here and there between CPUs).

Version 3 (plain files): every level, one image of two window chunks (so a chunk check is in the
stream), a greyscale one and one with another step count. Version 4 (generated files, the extreme
mode): a whole image at 200 bytes (what `--max-bytes 200` writes), partly drawn grids with each kind
of sampler (the most probable symbol, draws of p and p^2, nothing sent at all), a greyscale one, and
one of two window chunks with draws before the chunk check. Version 5 (mapped files, a level per
window): what `--max-bytes 15000` writes for kodim23, and hand-made maps: two levels in one chunk,
three levels whose groups are separate chunks, a group of more than one chunk, a map that skips
levels, and a greyscale one. Version 6 (every file of a model with a conditional head): the three
sets above, each file's name prefixed by its kind (plain-, generated-, mapped-). Version 7 (files
with flat blocks): version 6's three sets made from kodim23 with two flat patches pasted in
(FLAT_PATCHES, off the 8 px grid, inside every crop the sets take), so every file carries a flat
layer; the rate-controlled files (200 and 15000 bytes) are what `--max-bytes` writes, with the
layer added (rate control leaves it out where it does not gain PSNR, as there).

Run it once per format version and shipped model (the files of earlier versions stay, for the
release that reads them; a model's files go in a folder of its name, except those of the version's
first model, and golden.json keeps the other models' entries):

    python -m eval.make_golden --version 7                            # the default model
    python -m eval.make_golden --version 3 --model pq-s8-m12k256-v4   # a named one
"""
import argparse
import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

import pqcodec
from pqcodec import bitstream, flat
from pqcodec.bitstream import Generated
from pqcodec.codec import resize
from pqcodec.ratecontrol import encode_to_size

from .golden_pixels import machine, reference_name, write_reference  # eval/, beside this script

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "tests" / "data" / "kodim23.png"
# version 7's flat patches (rows, columns, colour): inside the 96x160 crop, the 64x64 grey crop and
# the first 256 rows and 384 columns, which every set's images hold
FLAT_PATCHES = ((slice(131, 171), slice(259, 301), (230, 20, 30)), (slice(203, 237), slice(302, 341), (90, 90, 90)))
_with_flat_patches = False


def source() -> np.ndarray:
    """kodim23 (RGB), with FLAT_PATCHES painted in for version 7."""
    rgb = np.array(Image.open(SOURCE).convert("RGB"))
    if _with_flat_patches:
        for rows, cols, colour in FLAT_PATCHES:
            rgb[rows, cols] = colour
    return rgb


def flat_layer_of(img: np.ndarray, greyscale: bool = False) -> bytes | None:
    """The flat layer of an image (RGB, or an L array), as the encoder makes it."""
    return flat.layer_of(img if img.ndim == 3 else np.repeat(img[..., None], 3, 2), greyscale)


def rate_controlled(codec, rgb: np.ndarray, max_bytes: int) -> bytes:
    """What `--max-bytes` writes for the image; for version 7, that file's tokens with the image's flat
    layer (rate control sends the layer only where it gains PSNR: on kodim23 with FLAT_PATCHES, not
    at 200 or 15000 bytes; the file then holds a few dozen bytes more)."""
    data = encode_to_size(codec, rgb, max_bytes=max_bytes).data
    if not _with_flat_patches:
        return data
    header, tokens = codec.decode_tokens(data)
    return codec.encode_tokens(tokens, header.height, header.width, header.greyscale, header.steps, header.generated,
                               flat_layer_of(rgb))


def plain_sources() -> dict[str, tuple[np.ndarray, list[int], int]]:
    """name -> (image, levels, steps)"""
    rgb = source()
    wide = np.concatenate([rgb, rgb[:, ::-1]], axis=1)[:384, :1408]     # 11 x 3 windows: 2 chunks
    grey = np.asarray(Image.fromarray(rgb[200:264, 300:364]).convert("L"))
    return {"kodim23-96x160": (rgb[128:224, 256:416], [1, 2, 3, 4, 5], pqcodec.DEFAULT_STEPS),
            "kodim23-1408x384": (wide, [1], pqcodec.DEFAULT_STEPS),
            "kodim23-grey-64x64": (grey, [2], pqcodec.DEFAULT_STEPS),
            "kodim23-96x160-steps5": (rgb[128:224, 256:416], [3], 5)}


def generated_files(codec) -> dict[str, bytes]:
    """name -> a generated file (version 4)"""
    rgb = source()
    wide = np.concatenate([rgb, rgb[:, ::-1]], axis=1)[:384, :1408]
    grey = np.asarray(Image.fromarray(rgb[:, :512]).convert("L"))
    steps = pqcodec.DEFAULT_STEPS

    def made(img, quality, generated, greyscale=False):
        s = codec.config.stride
        small = resize(img if img.ndim == 3 else np.repeat(img[..., None], 3, 2),
                       generated.grid_height * s, generated.grid_width * s)
        tokens = codec.image_to_tokens(small, codec.active_at(quality))
        return codec.encode_generated(tokens, img.shape[:2], greyscale, steps, generated,
                                      flat_layer_of(img, greyscale))[0]

    return {"kodim23-max200" + ("-with-layer" if _with_flat_patches else ""): rate_controlled(codec, rgb, 200),
            "kodim23-12x18-sent6-argmax-q1": made(rgb, 1, Generated(12, 18, 6, 0, 0)),
            "kodim23-12x18-sent9-p1-q2": made(rgb, 2, Generated(12, 18, 9, 1, 3)),
            "kodim23-16x24-sent0-p2-q1": made(rgb, 1, Generated(16, 24, 0, 2, 31)),
            "kodim23-grey-8x8-sent8-p7-q1": made(grey, 1, Generated(8, 8, 8, 7, 17), greyscale=True),
            "kodim23-1408x384-48x176-sent4-p2-q1": made(wide, 1, Generated(48, 176, 4, 2, 9))}


def mapped_files(codec) -> dict[str, bytes]:
    """name -> a mapped file (version 5)"""
    rgb = source()
    wide = np.concatenate([rgb, rgb[:, ::-1]], axis=1)[:512, :1408]    # 11 x 4 windows
    grey = np.asarray(Image.fromarray(rgb[:256, :384]).convert("L"))
    steps = pqcodec.DEFAULT_STEPS

    def made(img, counts, greyscale=False):
        rgb3 = img if img.ndim == 3 else np.repeat(img[..., None], 3, 2)
        tokens = codec.image_to_tokens(rgb3, int(np.max(counts)))
        return codec.encode_mapped(tokens, np.array(counts), img.shape[:2], greyscale, steps,
                                   flat_layer_of(img, greyscale))[0]

    checker = (np.add.outer(np.arange(4), np.arange(11)) % 3) + 1              # counts 1, 2, 4: groups of 14-15
    mostly_one = np.ones((4, 11), dtype=np.int64)
    mostly_one[1:3, 4:6] = 4                                                   # a group of 40 windows: 2 chunks
    return {"kodim23-max15000" + ("-with-layer" if _with_flat_patches else ""): rate_controlled(codec, rgb, 15000),
            "kodim23-96x160-q1q5": made(rgb[128:224, 256:416], [[1, 12]]),
            "kodim23-1408x512-checker-q1q2q3": made(wide, np.where(checker == 3, 4, checker)),
            "kodim23-1408x512-40q1-4q3": made(wide, mostly_one),
            "kodim23-grey-384x256-q2q4": made(grey, [[2, 8, 2], [8, 2, 2]], greyscale=True)}


def main():
    ap = argparse.ArgumentParser(prog="python -m eval.make_golden", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "tests" / "data" / "golden"))
    ap.add_argument("--model", default=pqcodec.DEFAULT_MODEL, help="a shipped model's name")
    ap.add_argument("--version", type=int, default=bitstream.FORMAT_VERSION,
                    choices=[bitstream.PLAIN_VERSION, bitstream.GENERATED_VERSION, bitstream.MAPPED_VERSION,
                             bitstream.CONDITIONAL_VERSION, bitstream.FLAT_VERSION],
                    help="which set: 3, plain files; 4, generated files; 5, mapped files; 6, all three of a "
                         "model with a conditional head; 7, all three with flat blocks")
    args = ap.parse_args()
    global _with_flat_patches
    _with_flat_patches = args.version == bitstream.FLAT_VERSION
    out = Path(args.out) / f"v{args.version}"
    out.mkdir(parents=True, exist_ok=True)
    old = json.loads((out / "golden.json").read_text())["files"] if (out / "golden.json").exists() else []
    entries = [e for e in old if e["model"] != args.model]
    sub = f"{args.model}/" if entries else ""  # the version's first model keeps the top folder
    (out / sub).mkdir(exist_ok=True)
    codec = pqcodec.load_codec(args.model)
    if args.version != bitstream.FLAT_VERSION and codec.config.conditional != (args.version == bitstream.CONDITIONAL_VERSION):
        raise SystemExit(f"make_golden.py: error: model {args.model} writes no version {args.version} files")
    plain = lambda: {f"{name}-q{q}": codec.encode(img, q, steps)  # noqa: E731
                     for name, (img, levels, steps) in plain_sources().items() for q in levels}
    if args.version == bitstream.PLAIN_VERSION:
        files = plain()
    elif args.version == bitstream.GENERATED_VERSION:
        files = generated_files(codec)
    elif args.version == bitstream.MAPPED_VERSION:
        files = mapped_files(codec)
    else:  # 6 and 7: all three kinds
        files = {f"{kind}-{name}": data for kind, made in (("plain", plain), ("generated", generated_files),
                                                           ("mapped", mapped_files))
                 for name, data in (made(codec) if kind != "plain" else made()).items()}
    for name, data in files.items():
        header, tokens = codec.decode_tokens(data)
        assert header.version == args.version, f"{name} is a version {header.version} file"
        pixels = np.asarray(codec.decode(data))
        fname = f"{sub}{name}.bin"
        (out / fname).write_bytes(data)
        write_reference(out / reference_name(fname), pixels)
        entry = {"file": fname, "model": args.model, "pqcodec": pqcodec.__version__,
                 "quality": codec.config.active_levels.index(header.active) + 1, "steps": header.steps,
                 "width": header.width, "height": header.height, "bytes": len(data),
                 "sha256": hashlib.sha256(data).hexdigest(), "token_crc32": f"{header.checksum:08x}",
                 "pixels_reference": reference_name(fname), "pixels_shape": list(pixels.shape)}
        if header.generated:
            entry["generated"] = dataclasses.asdict(header.generated)
        if header.mapped:  # levels per window, as the file's tokens say
            counts = codec.token_coder.window_counts(tokens)
            entry["window_levels"] = [codec.config.active_levels.index(int(c)) + 1 for c in counts]
        entries.append(entry)
        print(f"{fname}: {len(data)} bytes")
    first = json.loads((out / "golden.json").read_text())["pqcodec"] if old else pqcodec.__version__
    meta = {"format_version": args.version, "pqcodec": first,  # the release of the first files
            "pixels_reference_machine": machine(), "files": entries}  # the machine of the last references
    (out / "golden.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {len(entries)} files and golden.json to {out}")


if __name__ == "__main__":
    main()
