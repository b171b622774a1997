#!/usr/bin/env python3
"""Distortion alone, per quality level, without entropy coding: mean RGB PSNR of decode(quantize(x))
over a folder, for checkpoints during training (seconds, where eval/rd.py takes minutes).

    python -m eval.ae_psnr ../shared/data/kodak --model runs/ae/model.safetensors
"""
import argparse

import numpy as np

from .common import load_rgb_images
from . import pqcodec_eval
from pqcodec.metrics import psnr


def main():
    ap = argparse.ArgumentParser(prog="python -m eval.ae_psnr", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--model", help="weights file (default: the shipped default model)")
    ap.add_argument("--limit", type=int, help="first N images only")
    args = ap.parse_args()
    codec, _ = pqcodec_eval.load(args.model)
    images = load_rgb_images(args.folder)[:args.limit]
    grids = [(rgb, codec.image_to_tokens(rgb, codec.config.num_subvectors)) for _, rgb in images]
    for q in range(1, codec.num_levels() + 1):
        a = codec.active_at(q)
        scores = [psnr(rgb, codec.tokens_to_image(t[:a], *rgb.shape[:2])) for rgb, t in grids]
        print(f"level {q} ({a} sub-quantizers, raw {a * np.log2(codec.config.codebook_size) / codec.config.stride ** 2:.3f} bpp): "
              f"{np.mean(scores):.2f} dB")


if __name__ == "__main__":
    main()
