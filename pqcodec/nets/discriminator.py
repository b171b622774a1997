"""The discriminator of the perceptual decoder's fine-tune (train/perceptual.py): a small multi-scale
PatchGAN (pix2pixHD, Wang et al. 2018) with spectral normalisation, conditioned on the quantized
latent as in HiFiC (Mentzer et al. 2020). Training only: nothing here ships or codes.
"""
import torch
from torch import nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm


class PatchDiscriminator(nn.Module):
    """Image (B, 3, H, W) [+ condition (B, C, H, W)] -> (logits (B, 1, H/8, W/8), features).

    Three stride-2 4x4 convolutions and a 4x4 head: each logit judges a ~70 px patch. `features`
    are the activations after each convolution (for feature matching)."""

    def __init__(self, in_channels: int, width: int = 32):
        super().__init__()
        chans = [in_channels, width, 2 * width, 4 * width]
        self.body = nn.ModuleList(
            spectral_norm(nn.Conv2d(a, b, 4, stride=2, padding=1)) for a, b in zip(chans, chans[1:]))
        self.head = spectral_norm(nn.Conv2d(chans[-1], 1, 3, padding=1))

    def forward(self, x):
        features = []
        for conv in self.body:
            x = F.leaky_relu(conv(x), 0.2)
            features.append(x)
        return self.head(x), features


class MultiScaleDiscriminator(nn.Module):
    """`scales` PatchDiscriminators, on the image and on its 2x, 4x ... average-pooled copies, each
    seeing the quantized latent (B, D, h, w) squeezed to `cond_channels` by a 1x1 conv and upsampled
    (nearest) to its resolution, as HiFiC's conditional discriminator. cond_channels 0: unconditional.

    forward(x (B, 3, H, W), latent (B, D, H/s, W/s)) -> list over scales of (logits, features)."""

    def __init__(self, latent_dim: int, cond_channels: int = 12, width: int = 32, scales: int = 2):
        super().__init__()
        self.cond = spectral_norm(nn.Conv2d(latent_dim, cond_channels, 1)) if cond_channels else None
        self.nets = nn.ModuleList(PatchDiscriminator(3 + cond_channels, width) for _ in range(scales))

    def forward(self, x: torch.Tensor, latent: torch.Tensor | None = None):
        cond = self.cond(latent) if self.cond is not None else None        # (B, cond, h, w)
        out = []
        for k, net in enumerate(self.nets):
            if k:
                x = F.avg_pool2d(x, 2)
            inp = x - 0.5
            if cond is not None:
                inp = torch.cat([inp, F.interpolate(cond, size=x.shape[-2:], mode="nearest")], 1)
            out.append(net(inp))
        return out
