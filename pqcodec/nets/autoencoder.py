"""Convolutional analysis (encoder) and synthesis (decoder) transforms.

Stride 8 (three stride-2 stages): the prototype in DESIGN.md measured stride 8 beating stride 16 by
1.6 dB at the same raw rate and training time (docs/training.md has the reasoning).
"""
import torch
from torch import nn
import torch.nn.functional as F

from ..config import STRIDE

_BAND_BYTES = 4 << 20  # SimplifiedGDN's rows at a time in inference


class SimplifiedGDN(nn.Module):
    """Simplified generalized divisive normalisation (Johnston et al. 2019): y = x / (beta + gamma |x|).
    Cheaper than the square-root GDN. Only in the encoder: its multiplicative inverse in the decoder
    blew up a run at lr 1e-3 (docs/experiments.md), so the decoder uses LeakyReLU. Without autograd
    it divides its input in place (as the decoder's LeakyReLU does) and returns it."""

    def __init__(self, channels: int):
        super().__init__()
        self.beta = nn.Parameter(torch.ones(channels))
        self.gamma = nn.Parameter(0.1 * torch.eye(channels).view(channels, channels, 1, 1))

    def forward(self, x):
        # Parameters enter squared-plus-floor so the normaliser stays positive whatever the optimiser does.
        beta = self.beta.square() + 1e-6
        gamma = self.gamma.square()
        if torch.is_grad_enabled():
            return x / F.conv2d(x.abs(), gamma, beta)
        # Inference: in place, a band of rows at a time (the normaliser is a 1x1 convolution, so each
        # pixel's value is the same), so that a tile holds one copy of its largest activation instead
        # of three: the first stage of a 896 px tile is 98 MB a copy.
        rows = max(1, _BAND_BYTES // (x.element_size() * x.shape[1] * x.shape[3]))
        for r in range(0, x.shape[2], rows):
            band = x[:, :, r:r + rows]
            band.div_(F.conv2d(band.abs(), gamma, beta))
        return x




class ResBlock(nn.Module):
    def __init__(self, channels: int, padding: str = "zeros"):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, padding_mode=padding), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, padding_mode=padding))

    def forward(self, x):
        return x + self.body(x)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """Convolutions run on channels-last tensors: on CPUs oneDNN picks much faster kernels for them
    (the encoder of a Kodak image 1.7x, the decoder 2x, docs/experiments.md); values are the same
    up to float rounding."""
    return x.contiguous(memory_format=torch.channels_last)


class ReplicateConvTranspose2d(nn.ConvTranspose2d):
    """A stride-2 transposed convolution whose input is extended by one replicated token on every
    side: each output pixel then gets its full set of input contributions, where zero padding leaves
    the border's out. Cropping two more output pixels per side (padding + 2) keeps the output size
    and the interior's alignment, so the interior equals ConvTranspose2d's and the weights (same
    names and shapes) carry over."""

    def forward(self, x):
        x = F.pad(x, (1, 1, 1, 1), mode="replicate")
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride,
                                  (self.padding[0] + 2, self.padding[1] + 2), self.output_padding,
                                  self.groups, self.dilation)


def _down(cin, cout, padding="zeros"):
    return nn.Conv2d(cin, cout, 5, stride=2, padding=2, padding_mode=padding)


def _up(cin, cout, padding="zeros"):
    cls = ReplicateConvTranspose2d if padding == "replicate" else nn.ConvTranspose2d
    return cls(cin, cout, 5, stride=2, padding=2, output_padding=1)


class Encoder(nn.Module):
    """Image in [0, 1], (B, 3, H, W) with H, W multiples of `stride` -> latent (B, D, H/8, W/8)."""

    stride = STRIDE

    def __init__(self, channels: int, latent_dim: int, padding: str = "zeros"):
        super().__init__()
        self.net = nn.Sequential(
            _down(3, channels, padding), SimplifiedGDN(channels),
            _down(channels, channels, padding), SimplifiedGDN(channels),
            _down(channels, channels, padding), ResBlock(channels, padding),
            nn.Conv2d(channels, latent_dim, 3, padding=1, padding_mode=padding))

    def forward(self, x):
        return self.net(_channels_last(x - 0.5))


class Decoder(nn.Module):
    """Latent (B, D, h, w) -> image (B, 3, 8h, 8w), not clamped (clamp when converting to pixels)."""

    def __init__(self, channels: int, latent_dim: int, padding: str = "zeros"):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(latent_dim, channels, 3, padding=1, padding_mode=padding),
            ResBlock(channels, padding), ResBlock(channels, padding),
            _up(channels, channels, padding), nn.LeakyReLU(0.2, inplace=True),
            _up(channels, channels, padding), nn.LeakyReLU(0.2, inplace=True),
            _up(channels, 3, padding))

    def forward(self, y):
        return self.net(_channels_last(y)) + 0.5
