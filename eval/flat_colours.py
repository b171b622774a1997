#!/usr/bin/env python3
"""Flat colours through the codec (issue 14): six solid 256x256 images and the same colours as
64x64 patches pasted into two Kodak images, encoded to bytes and decoded at every level. Prints the
decoded mean per channel and the largest deviation from the true colour (solid: whole image, and
without a 16 px border; patches: their 48x48 interior); the goal is every deviation within ±2. The files carry the flat layer (pqcodec/flat.py)
unless --no-flat: then the table is the transforms' own (docs/quality.md, section 3).

    python -m eval.flat_colours                                   # the default model
    python -m eval.flat_colours --model pq-s8-m12k256-v3 --kodak ../shared/data/kodak
    python -m eval.flat_colours --model runs/ae/model.safetensors      # a training run's weights
    python -m eval.flat_colours --no-flat                         # the model alone, without the layer
"""
import argparse
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"grey128": (128, 128, 128), "black": (0, 0, 0), "white": (255, 255, 255),
           "red": (255, 0, 0), "green": (0, 160, 0), "blue": (40, 60, 200)}
PATCH_AT = [(101, 99), (101, 333), (101, 563), (301, 99), (301, 333), (301, 563)]  # off the 8 px grid
KODAK = ("kodim03.png", "kodim23.png")


def main():
    import pqcodec
    from pqcodec.zoo import load_codec, load_custom_codec
    ap = argparse.ArgumentParser(prog="python -m eval.flat_colours", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=pqcodec.DEFAULT_MODEL, help="a shipped model's name, or a weights file")
    ap.add_argument("--kodak", default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "kodak"))
    ap.add_argument("--no-flat", action="store_true", help="files without the flat layer (the transforms alone)")
    a = ap.parse_args()
    codec = load_custom_codec(a.model) if a.model.endswith(".safetensors") else load_codec(a.model)

    total = {}  # level -> file bytes, every case

    def round_trip(rgb, q):
        data = codec.encode(rgb, q, flat=not a.no_flat)
        total[q] = total.get(q, 0) + len(data)
        return np.asarray(codec.decode(data).convert("RGB")).astype(int), len(data)

    print(f"model {a.model}{' without the flat layer' if a.no_flat else ''}; mean decoded colour, max |deviation| (solid: whole / inside a 16 px border)")
    print("| case | colour | " + " | ".join(f"level {q}" for q in range(1, codec.num_levels() + 1)) + " |")
    print("|---|---|" + "---|" * codec.num_levels())
    worst = 0
    for name, col in COLOURS.items():
        cells = []
        for q in range(1, codec.num_levels() + 1):
            out, _ = round_trip(np.full((256, 256, 3), col, np.uint8), q)
            dev, inner = np.abs(out - col).max(), np.abs(out[16:-16, 16:-16] - col).max()
            worst = max(worst, dev)
            cells.append(f"({', '.join(f'{v:.0f}' for v in out.reshape(-1, 3).mean(0))}) {dev} / {inner}")
        print(f"| solid | {name} | " + " | ".join(cells) + " |")
    for kname in KODAK:
        img = np.array(Image.open(Path(a.kodak) / kname).convert("RGB"))
        if img.shape[0] > img.shape[1]:
            img = img.transpose(1, 0, 2).copy()
        for (y, x), col in zip(PATCH_AT, COLOURS.values()):
            img[y:y + 64, x:x + 64] = col
        per_level = [round_trip(img, q)[0] for q in range(1, codec.num_levels() + 1)]
        for (y, x), (name, col) in zip(PATCH_AT, COLOURS.items()):
            cells = []
            for out in per_level:
                p = out[y + 8:y + 56, x + 8:x + 56]
                worst = max(worst, np.abs(p - col).max())
                cells.append(f"({', '.join(f'{v:.0f}' for v in p.reshape(-1, 3).mean(0))}) {np.abs(p - col).max()}")
            print(f"| {kname} patch | {name} | " + " | ".join(cells) + " |")
    print(f"largest deviation: {worst} (goal: 2)")
    print("file bytes, all cases, levels 1-5: " + " / ".join(str(total[q]) for q in sorted(total)))


if __name__ == "__main__":
    main()
