"""Distortion metrics on uint8 RGB images."""
import numpy as np


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """RGB PSNR in dB over all channels (CompressAI's psnr-rgb)."""
    m = mse(a, b)
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
    agree). None for images under MS_SSIM_MIN_SIDE px on a side, where five scales do not fit."""
    if min(a.shape[:2]) < MS_SSIM_MIN_SIDE:
        return None
    import torch
    import torch.nn.functional as F
    x, y = (torch.from_numpy(np.asarray(t, dtype=np.float64)).permute(2, 0, 1)[None] / 255 for t in (a, b))
    channels = x.shape[1]
    coords = torch.arange(_WINDOW, dtype=torch.float64) - _WINDOW // 2
    g = torch.exp(-coords ** 2 / (2 * _SIGMA ** 2))
    g = (g / g.sum()).expand(channels, 1, 1, _WINDOW)

    def blur(t):  # separable Gaussian, 'valid' borders
        return F.conv2d(F.conv2d(t, g, groups=channels), g.transpose(2, 3), groups=channels)

    c1, c2 = _K1 ** 2, _K2 ** 2
    terms = []
    with torch.inference_mode():
        for scale in range(len(MS_SSIM_WEIGHTS)):
            mx, my = blur(x), blur(y)
            vx, vy, cxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
            cs_map = (2 * cxy + c2) / (vx + vy + c2)
            if scale < len(MS_SSIM_WEIGHTS) - 1:
                terms.append(cs_map.flatten(2).mean(-1).clamp_min(0))
                padding = [s % 2 for s in x.shape[2:]]
                x, y = F.avg_pool2d(x, 2, padding=padding), F.avg_pool2d(y, 2, padding=padding)
            else:
                ssim_map = (2 * mx * my + c1) / (mx ** 2 + my ** 2 + c1) * cs_map
                terms.append(ssim_map.flatten(2).mean(-1).clamp_min(0))
        weights = torch.tensor(MS_SSIM_WEIGHTS, dtype=torch.float64).view(-1, 1, 1)
        return float(torch.prod(torch.stack(terms) ** weights, dim=0).mean())


def ms_ssim_db(value: float) -> float:
    """MS-SSIM on CompressAI's plotting scale: -10 log10(1 - MS-SSIM)."""
    return float("inf") if value >= 1 else float(-10 * np.log10(1 - value))
