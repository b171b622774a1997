"""Training data: a folder of images held in memory, served as random crops."""
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


class CropSampler:
    """Decodes every image of `folder` once (uint8, RGB) and draws batches of random crops with random
    horizontal flips. Images smaller than the crop are skipped. Each rank passes its own seed."""

    def __init__(self, folder: str | Path, crop: int, seed: int = 0, progress: bool = True):
        from tqdm import tqdm
        self.crop = crop
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

    def batch(self, size: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """(size, 3, crop, crop) float in [0, 1] on `device` (moved as uint8: a quarter of the bytes)."""
        out = []
        for _ in range(size):
            img = self.images[self._randint(len(self.images))]
            _, H, W = img.shape
            y, x = self._randint(H - self.crop + 1), self._randint(W - self.crop + 1)
            c = img[:, y:y + self.crop, x:x + self.crop]
            if self._randint(2):
                c = c.flip(-1)
            out.append(c)
        return torch.stack(out).to(device).float().div_(255)
