#!/usr/bin/env python3
"""What the MIM prior earns, per quality level, in bits per coded index on a test folder:
  (a) uniform coding, log2 K;
  (b) a per-sub-quantizer unconditional histogram, fitted on the training images' tokens (the fair
      figure) and, for reference, on the test images' own tokens (an oracle lower bound for (b));
  (c) the MIM prior's ideal code length: the integer prior the coder runs (-log2 of every index's
      frequency, as the range coder sees it), and (c') the float prior it was calibrated from (the
      same windows and schedule, softmax in float64): what integer arithmetic costs;
and the real payload from file bytes against (c), and the whole file against (c) plus header.

    python -m eval.prior_gain ../shared/data/kodak --train ../shared/data/train
"""
import argparse
import math

import numpy as np
import torch
from tqdm import tqdm

from .common import CACHE, ResultCache, load_rgb_images
from . import pqcodec_eval
from pqcodec import DEFAULT_STEPS
from pqcodec.data import list_images


def histogram_bits(counts: np.ndarray, tokens: list[np.ndarray], smoothing: float = 1.0) -> float:
    """Mean bits per index of `tokens` (list of (M', h, w)) under per-sub-quantizer histograms
    `counts` (M, K) with add-`smoothing` (0 is fine when the counts include `tokens` themselves)."""
    p = (counts + smoothing) / (counts + smoothing).sum(1, keepdims=True)
    total = n = 0.0
    for t in tokens:
        for m in range(t.shape[0]):
            total -= np.log2(p[m, t[m].ravel()]).sum()
            n += t[m].size
    return total / n


@torch.inference_mode()
def float_prior_bits(codec, model, tokens: list[np.ndarray], active: int, steps: int) -> float:
    """Mean bits per index of `tokens` (list of (>= active, h, w)) under the float prior of `model`
    (the codec's, whole: pqcodec_eval.whole_model), windows and schedule as the coder uses them
    (padding positions neither coded nor attended)."""
    from pqcodec.coding.layout import to_windows, window_validity
    from pqcodec.train.quantize import prior_bits
    window = codec.config.window
    step_of = torch.from_numpy(codec.token_coder.schedule(steps).step_of())
    total = n = 0.0
    for t in tokens:
        grid = torch.from_numpy(t[:active].astype(np.int64))
        bits, count = prior_bits(model, to_windows(grid, window), active, step_of,
                                 window_validity(*grid.shape[1:], window))
        total, n = total + bits, n + count
    return total / n


def count(tokens: list[np.ndarray], M: int, K: int) -> np.ndarray:
    c = np.zeros((M, K))
    for t in tokens:
        for m in range(t.shape[0]):
            c[m] += np.bincount(t[m].ravel(), minlength=K)
    return c


def main():
    ap = argparse.ArgumentParser(prog="python -m eval.prior_gain", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--train", required=True, help="training images, to fit the histograms of (b)")
    ap.add_argument("--train-limit", type=int, default=400, help="training images used for (b)")
    ap.add_argument("--model")
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    ap.add_argument("--no-cache", action="store_true", help="recompute every coded image (see eval/rd.py)")
    args = ap.parse_args()

    codec, identity = pqcodec_eval.load(args.model)
    whole = pqcodec_eval.whole_model(args.model)
    cache = ResultCache(None if args.no_cache else CACHE)
    M, K = codec.config.num_subvectors, codec.config.codebook_size
    test = load_rgb_images(args.folder)
    paths = list_images(args.train)
    step = max(1, len(paths) // args.train_limit)
    train_tokens = [codec.image_to_tokens(rgb, M) for _, rgb in
                    tqdm(load_rgb_images(paths[::step]), desc="train tokens", leave=False)]
    train_counts = count(train_tokens, M, K)
    test_tokens_all = [codec.image_to_tokens(rgb, M) for _, rgb in test]  # a level codes the first few

    print("| level | (a) uniform | (b) histogram, fit on train | (b') histogram, fit on test (oracle) "
          "| (c) MIM prior, integer | (c') MIM prior, float | (c) vs (c') | payload from file bytes "
          "| file vs (c) + header |")
    print("|---|---|---|---|---|---|---|---|---|")
    for q in range(1, codec.num_levels() + 1):
        a = codec.active_at(q)
        rows = pqcodec_eval.run_level(codec, identity, test, q, args.steps, cache)
        test_tokens = [t[:a] for t in test_tokens_all]
        n = sum(x["indices"] for x in rows)
        mim = sum(x["bits_model"] for x in rows) / n
        payload = sum(8 * (x["bytes"] - x["header_bytes"]) for x in rows) / n
        file_bytes = sum(x["bytes"] for x in rows)
        ideal_file = sum(x["bits_model"] / 8 + x["header_bytes"] for x in rows)
        fl = float_prior_bits(codec, whole, test_tokens_all, a, args.steps)
        print(f"| {q} | {math.log2(K):.3f} | {histogram_bits(train_counts[:a], test_tokens):.3f} "
              f"| {histogram_bits(count(test_tokens, a, K), test_tokens, smoothing=0):.3f} | {mim:.3f} | {fl:.3f} "
              f"| {100 * (mim / fl - 1):+.3f} % | {payload:.3f} | {100 * (file_bytes / ideal_file - 1):+.3f} % |")
    print(f"\nbits per coded index over {len(test)} images of {args.folder}; {args.steps} steps")


if __name__ == "__main__":
    main()
