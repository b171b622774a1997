"""Distortion metrics on uint8 RGB images, in memory bounded by the images themselves: a few
megabytes of work arrays at a time (BAND_ELEMENTS), not several float64 copies of a whole image
(MS-SSIM took 2 GB beside a 3000x2000 image, `pqcodec compare`)."""
import numpy as np

BAND_ELEMENTS = 1 << 19  # samples a work array holds at a time: 4 MB in float64


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """The mean squared difference; of integer images exact (an integer sum, then one division),
    taken a band of rows at a time."""
    if not (np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer)):
        return float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    rows = max(1, BAND_ELEMENTS // max(1, a[:1].size))
    total = 0
    for r in range(0, len(a), rows):
        d = (a[r:r + rows].astype(np.int64) - b[r:r + rows]).ravel()
        total += int(d @ d)
    return total / a.size


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """RGB PSNR in dB over all channels (CompressAI's psnr-rgb)."""
    return psnr_of_mse(mse(a, b))


def psnr_of_mse(m: float) -> float:
    """PSNR in dB of 8-bit images whose mean squared difference is m."""
    return float("inf") if m == 0 else 10 * np.log10(255.0 ** 2 / m)


MS_SSIM_MIN_SIDE = 161  # five scales of an 11-tap window: (11 - 1) * 2**4 + 1


# MS-SSIM's five scales: their weights (Wang et al. 2003) and the Gaussian window of each scale's SSIM
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_WINDOW, _SIGMA, _K1, _K2 = 11, 1.5, 0.01, 0.03


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float | None:
    """RGB MS-SSIM (Wang et al. 2003) of two uint8 (H, W, 3) images, as CompressAI evaluates it with
    pytorch_msssim (data range 1, an 11-tap Gaussian window of sigma 1.5 without padding, 2x2 average
    pooling between scales, negative terms clipped to 0, the mean over channels); computed here in
    float64 torch, so that the package needs no pytorch_msssim (tests/test_metrics.py checks the two
    agree). A channel at a time, each scale's statistics a band of rows at a time: the work arrays
    are two float64 planes and a few bands. None for images under MS_SSIM_MIN_SIDE px on a side,
    where five scales do not fit."""
    if min(a.shape[:2]) < MS_SSIM_MIN_SIDE:
        return None
    import torch
    with torch.inference_mode():
        channels = [_ms_ssim_channel(*(torch.from_numpy(np.asarray(t[:, :, c], dtype=np.float64)) / 255 for t in (a, b)))
                    for c in range(a.shape[2])]
        return float(torch.stack(channels).mean())


def _ms_ssim_channel(x, y):
    """MS-SSIM of two (H, W) float64 planes in [0, 1]: the product over scales of each scale's mean
    term (contrast-structure, at the last scale SSIM), clipped to 0, to the power of its weight."""
    import torch
    import torch.nn.functional as F
    terms = []
    for scale in range(len(MS_SSIM_WEIGHTS)):
        last = scale == len(MS_SSIM_WEIGHTS) - 1
        terms.append(_mean_term(x, y, with_luminance=last).clamp_min(0))
        if not last:
            padding = [s % 2 for s in x.shape]
            x, y = (F.avg_pool2d(t[None, None], 2, padding=padding)[0, 0] for t in (x, y))
    weights = torch.tensor(MS_SSIM_WEIGHTS, dtype=torch.float64)
    return torch.prod(torch.stack(terms) ** weights)


def _mean_term(x, y, with_luminance: bool):
    """The mean over the 'valid' window positions of the contrast-structure map (times the
    luminance map: SSIM's, `with_luminance`) of planes x and y, a band of output rows at a time
    (each band reads its rows and the window's 10 below them)."""
    import torch
    import torch.nn.functional as F
    coords = torch.arange(_WINDOW, dtype=torch.float64) - _WINDOW // 2
    g = torch.exp(-coords ** 2 / (2 * _SIGMA ** 2))
    g = (g / g.sum()).view(1, 1, 1, _WINDOW)

    def blur(t):  # separable Gaussian, 'valid' borders
        return F.conv2d(F.conv2d(t, g), g.transpose(2, 3))[0, 0]

    c1, c2 = _K1 ** 2, _K2 ** 2
    height, width = x.shape[0] - _WINDOW + 1, x.shape[1] - _WINDOW + 1
    rows = max(1, BAND_ELEMENTS // x.shape[1])
    total = torch.zeros((), dtype=torch.float64)
    for r in range(0, height, rows):
        xs, ys = (t[r:r + rows + _WINDOW - 1][None, None] for t in (x, y))
        mx, my = blur(xs), blur(ys)
        vx, vy, cxy = blur(xs * xs) - mx ** 2, blur(ys * ys) - my ** 2, blur(xs * ys) - mx * my
        term = (2 * cxy + c2) / (vx + vy + c2)
        if with_luminance:
            term *= (2 * mx * my + c1) / (mx ** 2 + my ** 2 + c1)
        total += term.sum()
    return total / (height * width)


def ms_ssim_db(value: float) -> float:
    """MS-SSIM on CompressAI's plotting scale: -10 log10(1 - MS-SSIM)."""
    return float("inf") if value >= 1 else float(-10 * np.log10(1 - value))
