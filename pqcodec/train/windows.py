"""Token windows for the prior: the tokens of every training image, computed once, and random
windows with random reveal orders and rate levels drawn from them (training and calibration)."""
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..coding.schedule import cosine_boundaries
from ..data import list_images
from ..model import PQCodecModel


@torch.no_grad()
def image_tokens(model: PQCodecModel, folder, window: int, progress: bool,
                 device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """Index grids (M, h, w), int16 on the CPU, of every image in `folder` at least one window in
    size, computed on `device` (the model moves there): in float32, TF32 off, as the codec computes
    them (a GPU's last bits may still flip a rare choice: harmless for training)."""
    s = model.config.stride
    model.to(device)
    grids = []
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        for p in tqdm(list_images(folder), desc="tokenising", disable=not progress, leave=False):
            a = np.asarray(Image.open(p).convert("RGB"))
            H, W = a.shape[0] // s * s, a.shape[1] // s * s
            if min(H, W) < window * s:
                continue
            x = torch.from_numpy(a[:H, :W].copy()).permute(2, 0, 1)[None].to(device).float().div(255)
            grids.append(model.image_to_tokens(x)[0].to(torch.int16).cpu())
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    if not grids:
        raise ValueError(f"no image under {folder} is at least {window * s} px on its short side")
    return grids


MIN_STEPS, MAX_STEPS = 4, 32  # schedules seen in training; the codec's default lies inside


class WindowSampler:
    def __init__(self, grids: list[torch.Tensor], window: int, seed: int, mask_index: int = 0):
        self.grids, self.window, self.mask_index = grids, window, mask_index
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

    def edge_batch(self, size: int, edge_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Like `batch`, but a share `edge_fraction` of the windows are the partial windows coding
        meets at an image's bottom and right edges (any side not a multiple of the window): the
        last rows and/or columns of a grid, vh x vw positions (1..window-1 on a cut side), put at
        the window's top left; positions beyond them are MASK and outside the image (`valid`), so the
        prior learns to predict with the keys coding gives it there. Returns tokens (size, N, M)
        int64 and valid (size, N) bool."""
        n = self.window
        tokens = self.batch(size)
        valid = torch.ones(size, n, n, dtype=torch.bool)
        cut = torch.rand(size, generator=self.gen) < edge_fraction
        for b in cut.nonzero().flatten().tolist():
            side = int(torch.randint(0, 3, (1,), generator=self.gen))  # 0: bottom, 1: right, 2: corner
            vh = int(torch.randint(1, n, (1,), generator=self.gen)) if side != 1 else n
            vw = int(torch.randint(1, n, (1,), generator=self.gen)) if side != 0 else n
            g = self.grids[int(torch.randint(0, len(self.grids), (1,), generator=self.gen))]
            M, H, W = g.shape
            y = H - vh if side != 1 else int(torch.randint(0, H - n + 1, (1,), generator=self.gen))
            x = W - vw if side != 0 else int(torch.randint(0, W - n + 1, (1,), generator=self.gen))
            w = torch.full((M, n, n), self.mask_index, dtype=torch.long)
            w[:, :vh, :vw] = g[:, y:y + vh, x:x + vw]
            tokens[b] = w.flatten(1).T
            valid[b] = False
            valid[b, :vh, :vw] = True
        return tokens, valid.flatten(1)

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
