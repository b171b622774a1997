"""Encoder-side refinement of the latent (`pqcodec encode --effort N`): N gradient steps on the
encoder's latent z, through the straight-through quantizer (the first `active` sub-vectors snapped
to their nearest codewords, the rest the filler, as coding does) and the decoder, on the pixel
squared error of the image. The nearest codewords of the refined latent are then coded as usual.

The analysis transform picks codes that are nearest in latent space, which is not nearest in
pixels (docs/quality.md); the refinement moves the latent until the decoded image is closer. The
decoder and the format do not change: a refined file is a plain file of the tokens it holds.
Refined codes are a little less probable under the prior (their files a few % larger), and the
float gradients make the tokens depend on the machine, as the analysis transform's already do;
the file decodes everywhere (docs/bitstream.md). Measured on Kodak: docs/quality.md.
"""
import numpy as np
import torch

from .errors import InputTypeError, PQCodecError

EFFORT_LR = 0.01   # Adam's step on the latent (docs/experiments.md, refine-probe: 5 steps of 0.01)
MAX_EFFORT = 100


def check_effort(effort) -> int:
    """effort: a whole number in 0..MAX_EFFORT (an int or numpy integer, not a bool)."""
    if isinstance(effort, (bool, np.bool_)) or not isinstance(effort, (int, np.integer)):
        raise InputTypeError(f"effort must be a whole number in 0..{MAX_EFFORT}, got {effort!r} ({type(effort).__name__})")
    if not 0 <= effort <= MAX_EFFORT:
        raise PQCodecError(f"effort must be in 0..{MAX_EFFORT}, got {effort}")
    return int(effort)


def refine_latent(model, x: torch.Tensor, active: int, steps: int, lr: float = EFFORT_LR) -> torch.Tensor:
    """x (1, 3, H, W) in [0, 1], H and W multiples of the stride -> the refined latent (1, D, h, w)
    of `steps` Adam steps from the encoder's; works inside torch.inference_mode (turns it off here)."""
    q = model.quantizer
    with torch.inference_mode(False), torch.enable_grad():
        x = x.clone()                                                        # a normal tensor: autograd may save it
        with torch.no_grad():
            z = model.encoder(x).clone()
        z.requires_grad_(True)
        opt = torch.optim.Adam([z], lr=lr)
        keep = (torch.arange(q.dim, device=z.device) < active * q.d).view(1, -1, 1, 1)
        for _ in range(steps):
            with torch.no_grad():
                snapped = q.decode(q.encode(z, active), active)              # (1, D, h, w): codewords, filler
            latent = torch.where(keep, z + (snapped - z).detach(), snapped)  # straight through the snap
            loss = (model.decoder(latent) - x).square().mean()
            z.grad, = torch.autograd.grad(loss, z)                           # no gradients for the weights
            opt.step()
        return z.detach()
