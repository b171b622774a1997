#!/usr/bin/env python3
"""What windows cut at an image's edges cost (docs/quality.md): bits per coded index, from file
bytes, of Kodak images cropped to sizes whose sides are not multiples of 128 px, against whole-window
768x512 crops, for each shipped model, levels 1 and 3.

    python -m eval.odd_sizes ../shared/data/kodak --images 8
"""
import argparse

from .common import load_rgb_images
from pqcodec.data import list_images

SIZES = [(512, 768), (375, 500), (321, 481)]  # (height, width): no cut windows, 7 of 12, 6 of 12


def main():
    from pqcodec.zoo import ZOO, load_codec
    ap = argparse.ArgumentParser(prog="python -m eval.odd_sizes", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--images", type=int, default=8, help="the first N images (sorted by name)")
    ap.add_argument("--levels", type=int, nargs="*", default=[1, 3])
    ap.add_argument("--models", nargs="*", default=list(ZOO))
    a = ap.parse_args()
    images = [rgb.transpose(1, 0, 2) if rgb.shape[0] > rgb.shape[1] else rgb  # landscape
              for _, rgb in load_rgb_images(list_images(a.folder)[:a.images])]
    print("| model | level | " + " | ".join(f"{w}x{h}" for h, w in SIZES) + " |")
    print("|---|---|" + "---|" * len(SIZES))
    for name in a.models:
        codec = load_codec(name)
        for q in a.levels:
            cells, whole = [], None
            for h, w in SIZES:
                bits = indices = 0
                for rgb in images:
                    data = codec.encode(rgb[:h, :w], q)
                    bits += 8 * len(data)
                    indices += codec.decode_tokens(data)[1].size
                bpi = bits / indices
                whole = whole or bpi
                cells.append(f"{bpi:.4f}" + ("" if bpi == whole else f" ({100 * (bpi / whole - 1):+.2f} %)"))
            print(f"| {name} | {q} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
