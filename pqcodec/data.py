"""Training data: a folder of images held in memory, served as random crops."""
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .formats import is_image_name


def list_images(folder: str | Path) -> list[Path]:
    """The image files under `folder` (recursively, sorted): those whose extension is one Pillow
    reads (formats.readable_suffixes, the list folder runs use too)."""
    paths = sorted(p for p in Path(folder).rglob("*") if p.is_file() and is_image_name(p))
    if not paths:
        raise FileNotFoundError(f"no images (files with an extension Pillow reads: .png, .jpg, ...) under {folder}")
    return paths


SYNTHETIC_KINDS = ("flat", "ramp", "patch")


class CropSampler:
    """Decodes every image of `folder` once (uint8, RGB) and draws batches of random crops with random
    horizontal flips. Images smaller than the crop are skipped. Each rank passes its own seed.

    `synthetic` (0..1): that fraction of the crops is replaced, a third each, by a flat colour, a
    linear ramp between two colours in a random direction, or a photo crop with a flat rectangle
    pasted in (docs/quality.md, section 3: photos have too few flat regions for the first codebook
    and the decoder to learn flat colours). Colours are drawn so that a third are the corners of the
    RGB cube (black, white, primaries, secondaries), the rest uniform."""

    def __init__(self, folder: str | Path, crop: int, seed: int = 0, progress: bool = True,
                 synthetic: float = 0.0):
        from tqdm import tqdm
        if not 0 <= synthetic <= 1:
            raise ValueError(f"synthetic fraction must be within 0..1, got {synthetic}")
        self.crop, self.synthetic = crop, synthetic
        self.images = []
        for p in tqdm(list_images(folder), desc="loading images", disable=not progress, leave=False):
            a = np.asarray(Image.open(p).convert("RGB"))
            if min(a.shape[:2]) >= crop:
                self.images.append(torch.from_numpy(a.copy()).permute(2, 0, 1))
        if not self.images:
            raise ValueError(f"no image under {folder} is at least {crop} px on its short side")
        self.gen = torch.Generator().manual_seed(seed)

    def _randint(self, high: int) -> int:
        return int(torch.randint(0, high, (1,), generator=self.gen))

    def _photo_crop(self) -> torch.Tensor:
        img = self.images[self._randint(len(self.images))]
        _, H, W = img.shape
        y, x = self._randint(H - self.crop + 1), self._randint(W - self.crop + 1)
        c = img[:, y:y + self.crop, x:x + self.crop]
        return c.flip(-1) if self._randint(2) else c

    def _colour(self) -> torch.Tensor:
        """(3,) uint8: a corner of the RGB cube a third of the time, else uniform."""
        if self._randint(3) == 0:
            return torch.tensor([255 * self._randint(2) for _ in range(3)], dtype=torch.uint8)
        return torch.randint(0, 256, (3,), generator=self.gen, dtype=torch.uint8)

    def synthetic_crop(self, kind: str) -> torch.Tensor:
        """(3, crop, crop) uint8 of a SYNTHETIC_KINDS kind."""
        n = self.crop
        if kind == "flat":
            return self._colour().view(3, 1, 1).expand(3, n, n).clone()
        if kind == "ramp":
            a, b = self._colour().float(), self._colour().float()
            angle = float(torch.rand((), generator=self.gen)) * 2 * math.pi
            yy, xx = torch.meshgrid(torch.arange(n, dtype=torch.float32), torch.arange(n, dtype=torch.float32),
                                    indexing="ij")
            t = xx * math.cos(angle) + yy * math.sin(angle)
            t = (t - t.min()) / (t.max() - t.min()).clamp_min(1e-6)                       # 0..1 across
            return (a.view(3, 1, 1) + (b - a).view(3, 1, 1) * t).round_().to(torch.uint8)
        if kind == "patch":
            c = self._photo_crop().clone()
            h, w = self._randint(n // 2) + n // 4, self._randint(n // 2) + n // 4
            y, x = self._randint(n - h + 1), self._randint(n - w + 1)
            c[:, y:y + h, x:x + w] = self._colour().view(3, 1, 1)
            return c
        raise ValueError(f"unknown synthetic kind {kind!r}")

    def batch(self, size: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """(size, 3, crop, crop) float in [0, 1] on `device` (moved as uint8: a quarter of the bytes)."""
        out = []
        for _ in range(size):
            if self.synthetic and float(torch.rand((), generator=self.gen)) < self.synthetic:
                out.append(self.synthetic_crop(SYNTHETIC_KINDS[self._randint(len(SYNTHETIC_KINDS))]))
            else:
                out.append(self._photo_crop())
        return torch.stack(out).to(device).float().div_(255)
