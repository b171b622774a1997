"""Classic codecs through Pillow, on the same images, rate from the bytes of the file Pillow writes."""
import io

import numpy as np
import PIL
from PIL import Image
from tqdm import tqdm

from .common import image_key, mean_curve, quality_row

# Quality sweeps, fine at the low end where the learned codec competes. JPEG 2000 is swept by
# compression ratio (24 / ratio = bpp for RGB) with the 9/7 wavelet and the colour transform on.
SWEEPS = {
    "JPEG": dict(fmt="JPEG", qualities=[1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 75, 85, 95],
                 options=dict(optimize=True)),
    "WebP": dict(fmt="WEBP", qualities=[0, 1, 2, 5, 10, 15, 20, 30, 40, 50, 60, 75, 85, 95], options=dict(method=6)),
    "AVIF": dict(fmt="AVIF", qualities=[0, 5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90], options=dict(speed=4)),
    "JPEG2000": dict(fmt="JPEG2000", qualities=[400, 300, 240, 160, 120, 96, 80, 60, 48, 40, 30, 24, 16],
                     options=dict(quality_mode="rates", irreversible=True, mct=1), ratio=True),
}


def code_with_pillow(rgb: np.ndarray, name: str, quality: int) -> tuple[int, np.ndarray]:
    spec = SWEEPS[name]
    setting = dict(quality_layers=[quality]) if spec.get("ratio") else dict(quality=quality)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, spec["fmt"], **setting, **spec["options"])
    n = buf.tell()
    buf.seek(0)
    return n, np.asarray(Image.open(buf).convert("RGB"))


def measure(rgb: np.ndarray, name: str, quality: int) -> dict:
    n, rec = code_with_pillow(rgb, name, quality)
    return quality_row(n, rgb, rec)


def sweep(images, name: str, cache) -> dict:
    """One point per quality setting: mean bpp, PSNR and MS-SSIM over the images."""
    spec = SWEEPS[name]
    points = []
    for q in tqdm(spec["qualities"], desc=name, leave=False):
        rows = []
        for _, rgb in images:
            key = dict(codec=name, quality=q, options=spec["options"], pillow=PIL.__version__, image=image_key(rgb))
            rows.append(cache.get_or_compute(key, lambda: measure(rgb, name, q)))
        points.append((q, rows))
    return mean_curve(f"{name} (Pillow)", points)


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
