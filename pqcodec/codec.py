"""The staged coding loop: image <-> tokens <-> range-coded payload, and the container around it.

Determinism (DESIGN.md): the encoder runs exactly the loop the decoder runs (`_staged_coding`, one
function for both), with the same shapes, dtype and op order. The prior runs in float32 on one
thread whatever torch's setting: batched matmuls take thread-dependent code paths that differ in the
last bit (measured), one thread makes them one path; tests check 1 vs 2 threads give identical bytes.
Another CPU family may round differently: the token checksum makes such a file fail loudly, never
decode silently wrong (docs/bitstream.md, "Where a file decodes").
"""
import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import container, entropy
from .container import Header
from .errors import CorruptFileError, PQCodecError, UnsupportedFileError
from .image import load_image, to_pil
from .model import PQCodecModel
from .schedule import Schedule

DEFAULT_STEPS = 12
# Windows through the prior at once: bounds memory whatever the image size. Part of the format: the
# prior's float results depend on the batch shape, so the decoder must chunk as the encoder did.
WINDOW_CHUNK = 32
CODING_DTYPE = torch.float64  # softmax precision; the probabilities handed to the range coder


def _to_windows(grid: torch.Tensor, window: int) -> torch.Tensor:
    """(C, h, w) -> (windows, window*window, C): zero-padded to whole windows, windows row-major."""
    C, h, w = grid.shape
    nh, nw = math.ceil(h / window), math.ceil(w / window)
    padded = grid.new_zeros(C, nh * window, nw * window)
    padded[:, :h, :w] = grid
    return padded.view(C, nh, window, nw, window).permute(1, 3, 2, 4, 0).reshape(nh * nw, window * window, C)


def _from_windows(windows: torch.Tensor, h: int, w: int, window: int) -> torch.Tensor:
    """Inverse of _to_windows: (windows, window*window, C) -> (C, h, w)."""
    C = windows.shape[-1]
    nh, nw = math.ceil(h / window), math.ceil(w / window)
    grid = windows.view(nh, nw, window, window, C).permute(4, 0, 2, 1, 3)
    return grid.reshape(C, nh * window, nw * window)[:, :h, :w]


def _single_threaded(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)
    return wrapper


@dataclass
class CodingStats:
    """What `encode_with_stats` measured while coding one image."""
    bits_model: float      # ideal code length of the tokens under the prior, in bits
    num_indices: int       # coded indices (positions x sub-quantizers in use)
    file_bytes: int
    header_bytes: int
    tokens: np.ndarray     # the coded indices (quality, ceil(H/8), ceil(W/8))


class Codec:
    """A loaded model ready to code: `encode(image) -> bytes`, `decode(bytes) -> PIL.Image`."""

    def __init__(self, model: PQCodecModel, model_id: int, default_quality: int | None = None):
        self.model = model.eval()
        self.model_id = model_id
        self.config = model.config
        self.default_quality = default_quality or math.ceil(self.levels() / 2)

    def schedule(self, steps: int) -> Schedule:
        return Schedule(self.config.window, steps, self.config.schedule_seed)

    def levels(self) -> int:
        return self.config.num_subvectors

    def max_steps(self) -> int:
        """A schedule reveals at least one position per step, and the header has one byte for it."""
        return min(255, self.config.window ** 2)

    # -- image <-> tokens ------------------------------------------------------------------------
    @torch.inference_mode()
    def image_to_tokens(self, rgb: np.ndarray, active: int) -> np.ndarray:
        """uint8 (H, W, 3) -> indices (active, ceil(H/s), ceil(W/s)); edges padded by replication."""
        s = self.config.stride
        H, W = rgb.shape[:2]
        x = torch.tensor(rgb).permute(2, 0, 1)[None].float().div_(255)
        x = F.pad(x, (0, -W % s, 0, -H % s), mode="replicate")
        return self.model.image_to_tokens(x)[0, :active].numpy()

    @torch.inference_mode()
    def tokens_to_image(self, tokens: np.ndarray, height: int, width: int) -> np.ndarray:
        active = tokens.shape[0]
        x = self.model.tokens_to_image(torch.from_numpy(tokens)[None], active)[0, :, :height, :width]
        return x.mul(255).round_().to(torch.uint8).permute(1, 2, 0).numpy()

    # -- tokens <-> payload ----------------------------------------------------------------------
    @torch.inference_mode()
    @_single_threaded
    def _staged_coding(self, active: int, h: int, w: int, schedule: Schedule, code_step) -> np.ndarray:
        """Runs the schedule over every prior window of an h x w token grid. At each (window chunk,
        step), calls code_step(probabilities (n, K), chunk, positions, selection), which must return
        the n symbols at those places (the encoder: the true ones, after coding them; the decoder:
        the decoded ones). Returns the token grid (active, h, w)."""
        prior = self.model.prior
        valid = _to_windows(torch.ones(1, h, w, dtype=torch.bool), schedule.window)[..., 0]  # (windows, N)
        M = self.config.num_subvectors
        windows = torch.zeros(valid.shape[0], valid.shape[1], active, dtype=torch.long)
        for c0 in range(0, len(valid), WINDOW_CHUNK):
            chunk = slice(c0, min(c0 + WINDOW_CHUNK, len(valid)))
            cache = prior.start_cache(chunk.stop - chunk.start)
            for t in range(schedule.steps):
                pos = torch.from_numpy(schedule.positions(t))
                sel = valid[chunk][:, pos]                                  # (b, p)
                if not sel.any():
                    continue
                probs = prior.predict(cache, active, pos)[sel].to(CODING_DTYPE).softmax(-1)  # (n, active, K)
                symbols = torch.from_numpy(code_step(probs.reshape(-1, probs.shape[-1]).numpy(), chunk, pos, sel))
                revealed = torch.full((*sel.shape, M), prior.ABSENT, dtype=torch.long)
                revealed[..., :active] = prior.MASK  # stands in for padding positions, never attended
                revealed[..., :active][sel] = symbols.view(-1, active)
                windows[chunk, pos] = revealed[..., :active]
                if t + 1 < schedule.steps:
                    prior.reveal(cache, revealed, pos, sel)
        return _from_windows(windows, h, w, schedule.window).numpy()

    def tokens_to_payload(self, tokens: np.ndarray, steps: int) -> tuple[bytes, float]:
        """Returns (payload, ideal code length in bits under the prior)."""
        active, h, w = tokens.shape
        truth = _to_windows(torch.from_numpy(tokens.astype(np.int64)), self.config.window)
        enc = entropy.Encoder()
        bits = [0.0]

        def code_step(probs, chunk, pos, sel):
            symbols = truth[chunk][:, pos][sel].reshape(-1).numpy()
            enc.encode(symbols, probs)
            bits[0] -= float(np.log2(probs[np.arange(len(symbols)), symbols]).sum())
            return symbols

        decoded = self._staged_coding(active, h, w, self.schedule(steps), code_step)
        assert np.array_equal(decoded, tokens)
        return enc.payload(), bits[0]

    def payload_to_tokens(self, payload: bytes, active: int, h: int, w: int, steps: int) -> np.ndarray:
        dec = entropy.Decoder(payload)
        tokens = self._staged_coding(active, h, w, self.schedule(steps),
                                     lambda probs, *_: dec.decode(probs))
        if not dec.exhausted():
            raise CorruptFileError("payload has data left over after the last token (file damaged)")
        return tokens

    # -- the whole file --------------------------------------------------------------------------
    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        s = self.config.stride
        return math.ceil(height / s), math.ceil(width / s)

    def encode_with_stats(self, image, quality: int | None = None,
                          steps: int = DEFAULT_STEPS) -> tuple[bytes, CodingStats]:
        quality = self.default_quality if quality is None else quality
        if not 1 <= quality <= self.levels():
            raise PQCodecError(f"quality must be in 1..{self.levels()} for this model, got {quality}")
        if not 1 <= steps <= self.max_steps():
            raise PQCodecError(f"steps must be in 1..{self.max_steps()} for this model, got {steps}")
        rgb, grey = load_image(image)
        tokens = self.image_to_tokens(rgb, quality)
        payload, bits = self.tokens_to_payload(tokens, steps)
        header = Header(self.model_id, quality, steps, rgb.shape[0], rgb.shape[1], grey,
                        container.token_checksum(tokens))
        data = container.pack(header, payload)
        return data, CodingStats(bits, tokens.size, len(data), len(data) - len(payload), tokens)

    def encode(self, image, quality: int | None = None, steps: int = DEFAULT_STEPS) -> bytes:
        return self.encode_with_stats(image, quality, steps)[0]

    def decode_tokens(self, data: bytes) -> tuple[Header, np.ndarray]:
        header, payload = container.unpack(data)
        if header.model_id != self.model_id:
            raise UnsupportedFileError(f"file was made with model id {header.model_id}, not {self.model_id}")
        if header.active > self.levels():
            raise CorruptFileError(f"file uses {header.active} sub-quantizers; the model has {self.levels()}")
        if header.steps > self.max_steps():
            raise CorruptFileError(f"file claims {header.steps} steps; the model's windows allow {self.max_steps()}")
        h, w = self.grid_size(header.height, header.width)
        tokens = self.payload_to_tokens(payload, header.active, h, w, header.steps)
        if container.token_checksum(tokens) != header.checksum:
            raise CorruptFileError("token checksum mismatch: the file is damaged, or was made on a machine "
                                   "whose floating-point results differ from this one (docs/bitstream.md)")
        return header, tokens

    def decode(self, data: bytes):
        header, tokens = self.decode_tokens(data)
        return to_pil(self.tokens_to_image(tokens, header.height, header.width), header.greyscale)
