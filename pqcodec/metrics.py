"""Distortion metrics on uint8 RGB images."""
import numpy as np


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """RGB PSNR in dB over all channels (CompressAI's psnr-rgb)."""
    m = mse(a, b)
    return float("inf") if m == 0 else 10 * np.log10(255.0 ** 2 / m)


MS_SSIM_MIN_SIDE = 161  # five scales of an 11-tap window: (11 - 1) * 2**4 + 1


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float | None:
    """RGB MS-SSIM (Wang et al. 2003) with pytorch_msssim, as CompressAI evaluates it (data range 1);
    None for images under MS_SSIM_MIN_SIDE px on a side, where five scales do not fit."""
    if min(a.shape[:2]) < MS_SSIM_MIN_SIDE:
        return None
    try:
        import torch
        from pytorch_msssim import ms_ssim as _ms_ssim
    except ImportError:
        raise ImportError("MS-SSIM needs pytorch-msssim: pip install -e '.[eval]'") from None
    x, y = (torch.from_numpy(np.array(t, dtype=np.float32)).permute(2, 0, 1)[None] / 255 for t in (a, b))
    with torch.inference_mode():
        return float(_ms_ssim(x, y, data_range=1.0))


def ms_ssim_db(value: float) -> float:
    """MS-SSIM on CompressAI's plotting scale: -10 log10(1 - MS-SSIM)."""
    return float("inf") if value >= 1 else float(-10 * np.log10(1 - value))
