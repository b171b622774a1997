"""The staged coding loop: image <-> tokens <-> range-coded payload, and the container around it.

Determinism (DESIGN.md): the encoder runs exactly the loop the decoder runs (`_staged_coding`, one
function for both), with the same shapes, dtype and op order. The prior runs in float32 on one
thread whatever torch's setting: batched matmuls take thread-dependent code paths that differ in the
last bit (measured), one thread makes them one path; tests check 1 vs 2 threads give identical bytes.
Another CPU family may round differently: the token checksum makes such a file fail loudly, never
decode silently wrong (docs/bitstream.md, "Where a file decodes").
"""
import contextlib
import math
from concurrent.futures import ThreadPoolExecutor
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
# Windows coded together: bounds memory whatever the image size. A chunk goes through the prior as
# CHUNK_PARTS near-equal batches, which can run on separate threads. Both are part of the format: the
# prior's float results depend on the batch shape, so the decoder must batch as the encoder did.
WINDOW_CHUNK = 32
CHUNK_PARTS = 2
CODING_DTYPE = torch.float64  # softmax precision; the probabilities handed to the range coder
# The transforms run on tiles of TILE x TILE tokens (768 px at stride 8), each grown by TILE_HALO tokens
# of context on every side and cropped back: memory is bounded whatever the image size, and time grows
# linearly with it. The halo (64 px) is wider than the transforms' receptive fields (encoder ~38 px,
# decoder ~7 tokens), so tiles meet without seams: the result is the whole-image one up to float
# rounding. Not part of the format: the decoder is exact on tokens, which the checksum guards.
TILE, TILE_HALO = 96, 8


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


@contextlib.contextmanager
def _one_thread_per_op():
    """Every torch op on one thread (thread-count-independent results); yields the thread count
    that was set, for running independent parts side by side instead."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield threads
    finally:
        torch.set_num_threads(threads)


def _parts(n: int, parts: int) -> list[slice]:
    """[0, n) cut into `parts` contiguous, non-empty, near-equal slices (fewer if n is smaller)."""
    bounds = [n * i // parts for i in range(parts + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


@dataclass
class CodingStats:
    """What `encode_with_stats` measured while coding one image."""
    bits_model: float      # ideal code length of the tokens under the prior, in bits
    num_indices: int       # coded indices (positions x sub-quantizers in use)
    file_bytes: int
    header_bytes: int
    tokens: np.ndarray     # the coded indices (sub-quantizers in use, ceil(H/8), ceil(W/8))


class Codec:
    """A loaded model ready to code: `encode(image) -> bytes`, `decode(bytes) -> PIL.Image`."""

    def __init__(self, model: PQCodecModel, model_hash: bytes, default_quality: int | None = None):
        """model_hash: what files made with it carry in their model field (container.model_hash_of)."""
        self.model = model.eval()
        self.model_hash = model_hash
        self.config = model.config
        self.default_quality = default_quality or math.ceil(self.levels() / 2)

    def schedule(self, steps: int) -> Schedule:
        return Schedule(self.config.window, steps, self.config.schedule_seed)

    def levels(self) -> int:
        return len(self.config.active_levels)

    def active_at(self, quality: int) -> int:
        """Sub-quantizers in use at a quality level (1-based)."""
        return self.config.active_levels[quality - 1]

    def max_steps(self) -> int:
        """A schedule reveals at least one position per step, and the header has one byte for it."""
        return min(255, self.config.window ** 2)

    # -- image <-> tokens, in tiles ---------------------------------------------------------------
    def _tiles(self, h: int, w: int):
        """Token boxes (y0, y1, x0, x1) of the tile cores over an h x w grid, and of the same cores
        grown by TILE_HALO (clipped to the grid)."""
        for y0 in range(0, h, TILE):
            for x0 in range(0, w, TILE):
                core = (y0, min(y0 + TILE, h), x0, min(x0 + TILE, w))
                yield core, (max(0, y0 - TILE_HALO), min(h, core[1] + TILE_HALO),
                             max(0, x0 - TILE_HALO), min(w, core[3] + TILE_HALO))

    @torch.inference_mode()
    def image_to_tokens(self, rgb: np.ndarray, active: int) -> np.ndarray:
        """uint8 (H, W, 3) -> indices (active, ceil(H/s), ceil(W/s)); edges padded by replication."""
        s = self.config.stride
        H, W = rgb.shape[:2]
        h, w = self.grid_size(H, W)
        tokens = np.empty((active, h, w), dtype=np.int64)
        for (y0, y1, x0, x1), (Y0, Y1, X0, X1) in self._tiles(h, w):
            crop = rgb[Y0 * s:min(Y1 * s, H), X0 * s:min(X1 * s, W)]
            x = torch.from_numpy(np.array(crop)).permute(2, 0, 1)[None].float().div_(255)  # a writable copy
            x = F.pad(x, (0, -x.shape[3] % s, 0, -x.shape[2] % s), mode="replicate")
            t = self.model.image_to_tokens(x)[0, :active]
            tokens[:, y0:y1, x0:x1] = t[:, y0 - Y0:y1 - Y0, x0 - X0:x1 - X0].numpy()
        return tokens

    @torch.inference_mode()
    def tokens_to_image(self, tokens: np.ndarray, height: int, width: int) -> np.ndarray:
        """indices (active, h, w) -> uint8 (height, width, 3)."""
        s = self.config.stride
        active, h, w = tokens.shape
        out = np.empty((height, width, 3), dtype=np.uint8)
        for (y0, y1, x0, x1), (Y0, Y1, X0, X1) in self._tiles(h, w):
            t = torch.from_numpy(np.ascontiguousarray(tokens[:, Y0:Y1, X0:X1]))[None]
            x = self.model.tokens_to_image(t, active)[0]
            x = x[:, (y0 - Y0) * s:(y1 - Y0) * s, (x0 - X0) * s:(x1 - X0) * s]
            rows, cols = min(y1 * s, height) - y0 * s, min(x1 * s, width) - x0 * s
            out[y0 * s:y0 * s + rows, x0 * s:x0 * s + cols] = (
                x[:, :rows, :cols].mul(255).round_().to(torch.uint8).permute(1, 2, 0).numpy())
        return out

    # -- tokens <-> payload ----------------------------------------------------------------------
    @torch.inference_mode()
    def _staged_coding(self, active: int, h: int, w: int, schedule: Schedule, code_step) -> np.ndarray:
        """Runs the schedule over every prior window of an h x w token grid. At each (window chunk,
        step), calls code_step(probabilities (n, K), chunk, positions, selection), which must return
        the n symbols at those places (the encoder: the true ones, after coding them; the decoder:
        the decoded ones). Returns the token grid (active, h, w).

        Each chunk's windows go through the prior as CHUNK_PARTS batches of fixed shapes, on as many
        threads as torch may use; every op runs single-threaded, so the numbers are the same whether
        the parts run side by side or one after the other."""
        prior = self.model.prior
        # inference mode is per thread: the pool's threads need it too
        predict, reveal = torch.inference_mode()(prior.predict), torch.inference_mode()(prior.reveal)
        valid = _to_windows(torch.ones(1, h, w, dtype=torch.bool), schedule.window)[..., 0]  # (windows, N)
        M = self.config.num_subvectors
        windows = torch.zeros(valid.shape[0], valid.shape[1], active, dtype=torch.long)
        with _one_thread_per_op() as threads, ThreadPoolExecutor(max(1, min(threads, CHUNK_PARTS))) as pool:
            for c0 in range(0, len(valid), WINDOW_CHUNK):
                chunk = slice(c0, min(c0 + WINDOW_CHUNK, len(valid)))
                parts = _parts(chunk.stop - c0, CHUNK_PARTS)  # within the chunk
                caches = [prior.start_cache(p.stop - p.start) for p in parts]
                for t in range(schedule.steps):
                    pos = torch.from_numpy(schedule.positions(t))
                    sel = valid[chunk][:, pos]                                  # (b, p)
                    if not sel.any():
                        continue
                    logits = torch.cat(list(pool.map(lambda c: predict(c, active, pos), caches)))
                    probs = logits[sel].to(CODING_DTYPE).softmax(-1)            # (n, active, K)
                    symbols = torch.from_numpy(code_step(probs.reshape(-1, probs.shape[-1]).numpy(), chunk, pos, sel))
                    revealed = torch.full((*sel.shape, M), prior.ABSENT, dtype=torch.long)
                    revealed[..., :active] = prior.MASK  # stands in for padding positions, never attended
                    revealed[..., :active][sel] = symbols.view(-1, active)
                    windows[chunk, pos] = revealed[..., :active]
                    if t + 1 < schedule.steps:
                        list(pool.map(lambda c, p: reveal(c, revealed[p], pos, sel[p]), caches, parts))
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
        active = self.active_at(quality)
        tokens = self.image_to_tokens(rgb, active)
        payload, bits = self.tokens_to_payload(tokens, steps)
        header = Header(self.model_hash, active, steps, rgb.shape[0], rgb.shape[1], grey,
                        container.token_checksum(tokens))
        data = container.pack(header, payload)
        return data, CodingStats(bits, tokens.size, len(data), len(data) - len(payload), tokens)

    def encode(self, image, quality: int | None = None, steps: int = DEFAULT_STEPS) -> bytes:
        return self.encode_with_stats(image, quality, steps)[0]

    def decode_tokens(self, data: bytes) -> tuple[Header, np.ndarray]:
        header, payload = container.unpack(data)
        if header.model_hash != self.model_hash:
            raise UnsupportedFileError(f"file was made with model {header.model_hash.hex()}, not with this "
                                       f"codec's {self.model_hash.hex()}")
        if header.active not in self.config.active_levels:
            raise CorruptFileError(f"file uses {header.active} sub-quantizers; the model's levels use "
                                   f"{', '.join(map(str, self.config.active_levels))}")
        if header.steps > self.max_steps():
            raise CorruptFileError(f"file claims {header.steps} steps; the model's windows allow {self.max_steps()}")
        h, w = self.grid_size(header.height, header.width)
        if len(payload) > container.max_payload_bytes(header.active * h * w):
            raise CorruptFileError(f"payload of {len(payload)} bytes is longer than {header.active * h * w} "
                                   "indices can take (file damaged)")
        tokens = self.payload_to_tokens(payload, header.active, h, w, header.steps)
        if container.token_checksum(tokens) != header.checksum:
            raise CorruptFileError("token checksum mismatch: the file is damaged, or was made on a machine "
                                   "whose floating-point results differ from this one (docs/bitstream.md)")
        return header, tokens

    def decode(self, data: bytes):
        header, tokens = self.decode_tokens(data)
        return to_pil(self.tokens_to_image(tokens, header.height, header.width), header.greyscale)
