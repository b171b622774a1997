"""Classic codecs through Pillow, on the same images, rate from the bytes of the file Pillow writes."""
import io

import numpy as np
from PIL import Image

from common import bpp
from pqcodec.metrics import psnr

# Quality sweeps: fine at the low end, where the learned codec competes.
SWEEPS = {
    "JPEG": dict(fmt="JPEG", qualities=[1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 75, 85, 95],
                 options=dict(optimize=True)),
    "WebP": dict(fmt="WEBP", qualities=[0, 1, 2, 5, 10, 15, 20, 30, 40, 50, 60, 75, 85, 95], options=dict(method=6)),
    "AVIF": dict(fmt="AVIF", qualities=[0, 5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90], options=dict(speed=4)),
}


def code_with_pillow(rgb: np.ndarray, fmt: str, quality: int, options: dict) -> tuple[int, np.ndarray]:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt, quality=quality, **options)
    n = buf.tell()
    buf.seek(0)
    return n, np.asarray(Image.open(buf).convert("RGB"))


def sweep(images, name: str) -> dict:
    """CompressAI results layout, one point per quality: mean bpp and mean PSNR over the images."""
    spec = SWEEPS[name]
    out = {"bpp": [], "psnr-rgb": [], "quality": []}
    for q in spec["qualities"]:
        rates, dists = [], []
        for _, rgb in images:
            n, rec = code_with_pillow(rgb, spec["fmt"], q, spec["options"])
            rates.append(bpp(n, rgb))
            dists.append(psnr(rgb, rec))
        out["bpp"].append(float(np.mean(rates)))
        out["psnr-rgb"].append(float(np.mean(dists)))
        out["quality"].append(q)
    return {"name": f"{name} (Pillow)", "results": out}


def psnr_at_rate(curve: dict, rate: float) -> float | None:
    """A curve's PSNR at `rate` by linear interpolation in bpp between its two neighbouring points;
    None when the rate lies outside the curve (no extrapolation)."""
    r = np.array(curve["results"]["bpp"])
    d = np.array(curve["results"]["psnr-rgb"])
    order = np.argsort(r)
    r, d = r[order], d[order]
    if not r[0] <= rate <= r[-1]:
        return None
    return float(np.interp(rate, r, d))
