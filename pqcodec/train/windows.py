"""Token windows for the prior: the tokens of every training image, computed once, and random
windows with random reveal orders and rate levels drawn from them (training and calibration)."""
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..bitstream import cosine_boundaries
from ..data import list_images
from ..model import PQCodecModel


@torch.no_grad()
def image_tokens(model: PQCodecModel, folder, window: int, progress: bool) -> list[torch.Tensor]:
    """Index grids (M, h, w), int16, of every image in `folder` at least one window in size."""
    s = model.config.stride
    grids = []
    for p in tqdm(list_images(folder), desc="tokenising", disable=not progress, leave=False):
        a = np.asarray(Image.open(p).convert("RGB"))
        H, W = a.shape[0] // s * s, a.shape[1] // s * s
        if min(H, W) < window * s:
            continue
        x = torch.from_numpy(a[:H, :W].copy()).permute(2, 0, 1)[None].float().div(255)
        grids.append(model.image_to_tokens(x)[0].to(torch.int16))
    if not grids:
        raise ValueError(f"no image under {folder} is at least {window * s} px on its short side")
    return grids


MIN_STEPS, MAX_STEPS = 4, 32  # schedules seen in training; the codec's default lies inside


class WindowSampler:
    def __init__(self, grids: list[torch.Tensor], window: int, seed: int):
        self.grids, self.window = grids, window
        self.gen = torch.Generator().manual_seed(seed)

    def batch(self, size: int) -> torch.Tensor:
        """(size, window*window, M) int64."""
        out = []
        n = self.window
        for i in torch.randint(0, len(self.grids), (size,), generator=self.gen).tolist():
            g = self.grids[i]
            y = int(torch.randint(0, g.shape[1] - n + 1, (1,), generator=self.gen))
            x = int(torch.randint(0, g.shape[2] - n + 1, (1,), generator=self.gen))
            out.append(g[:, y:y + n, x:x + n].flatten(1).T)
        return torch.stack(out).long()

    def orders(self, size: int, positions: int, levels: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per window: the step at which each position is revealed (size, positions), from a random
        order and a number of steps drawn from the coding range, so every schedule the codec may use
        is seen; and the sub-quantizers in use (size,), uniform over the model's levels."""
        steps = int(torch.randint(MIN_STEPS, MAX_STEPS + 1, (1,), generator=self.gen))
        ends = torch.tensor(cosine_boundaries(positions, steps)[1:])
        rank = torch.rand(size, positions, generator=self.gen).argsort(1).argsort(1)
        step_of = torch.searchsorted(ends, rank, right=True)
        active = torch.tensor(levels)[torch.randint(0, len(levels), (size,), generator=self.gen)]
        return step_of, active
