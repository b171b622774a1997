#!/usr/bin/env python3
"""Decode time of two weights files on the same images, interleaved in one process (A, B, A, B, ...),
so that the machine's drift hits both alike: the fair ratio of two models' decoders on a noisy
machine, where eval/bench.py's separate runs are good to about ±20 %. Prints the mean decode time
per image of each round and the ratio of the medians, per quality level.

    python -m eval.ab_decode ../shared/data/kodak pqcodec/models/pq-s8-m12k256-v4.safetensors \\
        pqcodec/models/pq-s8-m12k256-v5.safetensors --levels 3 5
"""
import argparse
import time

import numpy as np

from .common import load_rgb_images
from pqcodec.zoo import load_custom_codec


def main():
    ap = argparse.ArgumentParser(prog="python -m eval.ab_decode", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("a", help="weights file A")
    ap.add_argument("b", help="weights file B")
    ap.add_argument("--levels", type=int, nargs="+", default=[3])
    ap.add_argument("--images", type=int, default=6, help="every k-th image so that N are used (default 6)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    names = [args.a, args.b]
    codecs = [load_custom_codec(n) for n in names]
    images = load_rgb_images(args.folder)
    images = [rgb for _, rgb in images[::max(1, len(images) // args.images)][:args.images]]
    for q in args.levels:
        files = [[c.encode(rgb, q) for rgb in images] for c in codecs]
        times = [[], []]
        for _ in range(args.rounds):
            for k, c in enumerate(codecs):
                t = time.perf_counter()
                for data in files[k]:
                    c.decode(data)
                times[k].append((time.perf_counter() - t) / len(images))
        ratio = np.median(times[1]) / np.median(times[0])
        print(f"level {q}: A {' / '.join(f'{x:.3f}' for x in times[0])} s, "
              f"B {' / '.join(f'{x:.3f}' for x in times[1])} s per image; B / A (medians) {ratio:.3f}")


if __name__ == "__main__":
    main()
