"""pqcodec as an eval subject: code every image at one level, rate from the file bytes."""
import time

import numpy as np
from tqdm import tqdm

from common import bpp
from pqcodec.metrics import psnr


def load(model_path: str | None):
    from pqcodec.zoo import DEFAULT_MODEL_ID, load_codec, load_custom_codec
    return load_custom_codec(model_path) if model_path else load_codec(DEFAULT_MODEL_ID)


def run_level(codec, images, quality: int, steps: int) -> dict:
    """Per image: bpp (file bytes), PSNR, ideal bits under the prior, coded indices, whether the
    decoded tokens equal the encoded ones, and coding times."""
    rows = []
    for name, rgb in tqdm(images, desc=f"pqcodec q{quality}", leave=False):
        t0 = time.perf_counter()
        data, stats = codec.encode_with_stats(rgb, quality, steps)
        t1 = time.perf_counter()
        header, tokens = codec.decode_tokens(data)
        rec = codec.tokens_to_image(tokens, header.height, header.width)
        t2 = time.perf_counter()
        rows.append(dict(image=name, bytes=len(data), bpp=bpp(len(data), rgb), psnr=psnr(rgb, rec),
                         bits_model=stats.bits_model, indices=stats.num_indices,
                         header_bytes=stats.header_bytes,
                         exact=bool(np.array_equal(tokens, stats.tokens)),
                         encode_s=t1 - t0, decode_s=t2 - t1))
    return {"bpp": float(np.mean([r["bpp"] for r in rows])),
            "psnr-rgb": float(np.mean([r["psnr"] for r in rows])),
            "per_image": rows}
