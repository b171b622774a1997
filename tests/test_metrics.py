"""metrics.ms_ssim, computed in the package, against pytorch_msssim (CompressAI's MS-SSIM), which
it replaces (the test extra installs it)."""
import numpy as np
import pytest
from PIL import Image

from conftest import DATA, random_image
from pqcodec.metrics import MS_SSIM_MIN_SIDE, ms_ssim


def _reference(a, b):
    torch = pytest.importorskip("torch")
    msssim = pytest.importorskip("pytorch_msssim")
    x, y = (torch.from_numpy(np.array(t, dtype=np.float32)).permute(2, 0, 1)[None] / 255 for t in (a, b))
    return float(msssim.ms_ssim(x, y, data_range=1.0))


@pytest.mark.parametrize("size", [(512, 768), (201, 177), (161, 161)])
def test_ms_ssim_agrees_with_pytorch_msssim(size):
    a = np.asarray(Image.open(DATA / "kodim23.png").convert("RGB"))[:size[0], :size[1]]
    rng = np.random.default_rng(0)
    for b in (np.clip(a + rng.normal(0, 12, a.shape), 0, 255).astype(np.uint8), (a // 48 * 48).astype(np.uint8),
              random_image(*a.shape[:2]), a):
        assert ms_ssim(a, b) == pytest.approx(_reference(a, b), abs=2e-5)


def test_ms_ssim_of_small_images_is_none():
    a = random_image(MS_SSIM_MIN_SIDE - 1, 300)
    assert ms_ssim(a, a) is None
    assert ms_ssim(random_image(MS_SSIM_MIN_SIDE, 300), random_image(MS_SSIM_MIN_SIDE, 300)) == 1.0
