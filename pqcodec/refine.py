"""Encoder-side refinement of the latent (`pqcodec encode --effort N`): N gradient steps on the
encoder's latent z, through the straight-through quantizer (the first `active` sub-vectors snapped
to their nearest codewords, the rest the filler, as coding does) and the decoder, on the pixel
squared error of the image. Of the encoder's latent and the N refined ones, the one whose codes
decode closest to the image is kept, and its nearest codewords are coded as usual: more effort never
decodes farther from the image than effort 0. (Adam on the straight-through gradient does not
descend steadily: kept from the last step, kodim23 at level 3 ended 0.9 dB below effort 0, in a file
30 % larger, after 100 steps.)

The analysis transform picks codes that are nearest in latent space, which is not nearest in
pixels (docs/quality.md); the refinement moves the latent until the decoded image is closer. The
decoder and the format do not change: a refined file is a plain file of the tokens it holds.
Refined codes are a little less probable under the prior (their files a few % larger), and the
float gradients make the tokens depend on the machine, as the analysis transform's already do;
the file decodes everywhere (docs/bitstream.md). Measured on Kodak: docs/quality.md.
"""
import math

import numpy as np
import torch

from .errors import InputTypeError, PQCodecError

EFFORT_LR = 0.01   # Adam's step on the latent (docs/experiments.md, refine-probe: 5 steps of 0.01)
# more changes nothing: on Kodak at level 3 every image's closest codes were found within 10 steps
# (effort 20 gave the same files), and past 5 a step buys less than a level does (docs/quality.md)
MAX_EFFORT = 10


def check_effort(effort) -> int:
    """effort: a whole number in 0..MAX_EFFORT (an int or numpy integer, not a bool)."""
    if isinstance(effort, (bool, np.bool_)) or not isinstance(effort, (int, np.integer)):
        raise InputTypeError(f"effort must be a whole number in 0..{MAX_EFFORT}, got {effort!r} ({type(effort).__name__})")
    if not 0 <= effort <= MAX_EFFORT:
        raise PQCodecError(f"effort must be in 0..{MAX_EFFORT}, got {effort}")
    return int(effort)


def refine_latent(model, x: torch.Tensor, active: int, steps: int, lr: float = EFFORT_LR,
                  judged: tuple[slice, slice] | None = None) -> torch.Tensor:
    """x (1, 3, H, W) in [0, 1], H and W multiples of the stride -> the latent (1, D, h, w) among the
    encoder's and its `steps` Adam steps whose codes decode closest to x over the pixels `judged`
    (rows, columns; default all). The encoder's own latent is a candidate, so the codes chosen never
    decode farther from the image than effort 0's: more steps can only bring them closer (Adam on
    the straight-through gradient does not descend steadily).
    Works inside torch.inference_mode (turns it off here)."""
    q = model.quantizer
    rows, cols = judged or (slice(None), slice(None))
    with torch.inference_mode(False), torch.enable_grad():
        x = x.clone()                                                        # a normal tensor: autograd may save it
        with torch.no_grad():
            z = model.encoder(x).clone()
        z.requires_grad_(True)
        opt = torch.optim.Adam([z], lr=lr)
        keep = (torch.arange(q.dim, device=z.device) < active * q.d).view(1, -1, 1, 1)
        best, best_error = None, math.inf
        for step in range(steps + 1):
            with torch.no_grad():
                snapped = q.decode(q.encode(z, active), active)              # (1, D, h, w): codewords, filler
            if step == steps:                                                # the last latent: judged, not stepped
                with torch.no_grad():
                    error = (model.decoder(snapped) - x)[..., rows, cols].square().mean().item()
            else:
                latent = torch.where(keep, z + (snapped - z).detach(), snapped)  # straight through the snap
                squared = (model.decoder(latent) - x).square()               # (1, 3, H, W); its value: the codes'
                error = squared[..., rows, cols].mean().item()
                z.grad, = torch.autograd.grad(squared.mean(), z)             # no gradients for the weights
            if error < best_error:
                best, best_error = z.detach().clone(), error
            if step < steps:
                opt.step()
        return best
