"""Images <-> .bin files: the transforms in tiles, the token coder, the container.

The token grid is coded by the coding core's `TokenCoder` (pqcodec/coding) with the integer-exact prior, so a file decodes
on any machine; the transforms are float (a decoded pixel may differ by one level between CPU
families, like JPEG decoders' float IDCTs), and the token checksum in the header guards the decode.
"""
import copy
import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from PIL import Image

from . import bitstream, flat as flat_blocks, rdoq, refine
from .bitstream import Generated, Header
from .coding.layout import UNUSED, position_counts
from .coding.schedule import DEFAULT_STEPS
from .coding.token_coder import CompressedTokens, TokenCoder
from .cores import idle_threads
from .decoders import DEFAULT_DECODER, DECODER_NAMES, load_decoder
from .errors import CorruptFileError, InputTypeError, ModelFilesError, PQCodecError, UnsupportedFileError, named
from .files import sha256_of
from .heap import release_free_memory
from .image import load_image, to_pil
from .model import PQCodecModel
from .numerics import numerics_fence
from .sources import coded_input

# The transforms run on tiles of TILE x TILE tokens (512 px at stride 8), each grown by TILE_HALO tokens
# of context on every side and cropped back: memory is bounded whatever the image size, and time grows
# linearly with it. The halo (64 px) is wider than the transforms' receptive fields (encoder ~38 px,
# decoder ~7 tokens), so tiles meet without seams: the result is the whole-image one up to float
# rounding. Not part of the format: the decoder is exact on tokens, which the checksum guards.
# An image whose grid fits in WHOLE x WHOLE tokens (768 x 768 px, a Kodak photo) runs in one piece,
# without a halo to pay for: its pixels take little memory, so its work may take more. A larger
# image's own arrays (72 MB of pixels at 24 MP) leave less room, and its tiles are smaller
# (docs/cli.md, "Large images", has what each size cost).
WHOLE, TILE, TILE_HALO = 96, 64, 8


@dataclass
class CodingStats:
    """What `encode_with_stats` measured while coding one image."""
    bits_model: float      # ideal code length of the tokens under the prior, in bits
    num_indices: int       # coded indices (positions x sub-quantizers in use)
    file_bytes: int
    header_bytes: int
    tokens: np.ndarray     # the coded indices (sub-quantizers in use, ceil(H/8), ceil(W/8))
    window_bits: np.ndarray | None = None  # (windows high, windows wide) bits_model per prior window
    flat_bytes: int = 0    # the flat layer's bytes (flat.py), part of header_bytes


class Codec:
    """A loaded model ready to code: `encode(image) -> bytes`, `decode(bytes) -> PIL.Image`.

    Decoders: the model's own ("mse") always; "perceptual" where a perceptual decoder file for this
    model's weights is registered (zoo.py, or `add_decoder`); it is loaded on first use."""

    def __init__(self, model: PQCodecModel, model_hash: bytes, default_level: int | None = None,
                 weights_sha256: str | None = None, name: str | None = None):
        """model_hash: what files made with it carry in their model field (bitstream.model_hash_of).
        weights_sha256: the SHA-256 of the weights file, which a decoder file must name to pair;
        name: what errors call the model (its zoo name, or its weights file)."""
        self.model = model.eval()
        self.model_hash = model_hash
        self.weights_sha256 = weights_sha256
        self.name = name or f"model {model_hash.hex()}"
        self.config = model.config
        self._decoder_files: dict[str, tuple[Path, str | None]] = {}  # name -> (file, its expected SHA-256)
        self._decoders: dict[str, torch.nn.Module] = {}
        self._nets64: dict[torch.nn.Module, torch.nn.Module] = {}  # a decoder -> its float64 copy (_synthesis64)
        self.default_level = default_level or math.ceil(self.num_levels() / 2)
        if self.config.stride != bitstream.GRID_STRIDE:  # the header's grids are counted in these tokens
            raise UnsupportedFileError(f"a model of stride {self.config.stride} cannot code this format "
                                       f"(tokens of {bitstream.GRID_STRIDE} px)")
        if not model.can_code():
            raise UnsupportedFileError("these weights have no calibrated integer prior, which coding needs "
                                       "(make one: pqcodec-train quantize --init WEIGHTS ...)")
        if self.config.conditional and not bool(model.int_cond.calibrated):
            raise UnsupportedFileError("these weights' conditional head has no integer counterpart, which coding "
                                       "needs (make one: pqcodec-train conditional --epochs 0 --init WEIGHTS ...)")
        try:  # weights whose integers could depend on the machine are refused before they write a file
            model.int_prior.check_exact()
            if self.config.conditional:
                model.int_cond.check_exact()
        except ValueError as e:
            raise UnsupportedFileError(f"these weights cannot be coded exactly on every machine ({e})") from None
        self.token_coder = TokenCoder(model.int_prior, self.config.window, self.config.schedule_seed, self.config.active_levels,
                                 model.int_cond if self.config.conditional else None)

    def num_levels(self) -> int:
        return len(self.config.active_levels)

    @property
    def device(self) -> torch.device:
        """Where the transforms, the prior and the head run (`to`); range coding is on the CPU."""
        return self.model.int_prior.start.device

    def to(self, device) -> "Codec":
        """Moves the model (and the decoders loaded) to `device` ("cpu", "cuda", "cuda:1", or a
        torch.device) and returns self. The files are the same on every device: the prior and head
        are integer-exact (pqcodec/coding), the transforms' float differences never reach the
        tokens' checksum."""
        device = torch.device(device)
        self.model.to(device)
        for name, net in self._decoders.items():
            self._decoders[name] = net.to(device)
        self._nets64.clear()
        self.__dict__.pop("_quantizer64", None)
        return self

    # -- decoders ----------------------------------------------------------------------------------
    def add_decoder(self, name: str, path: str | Path, sha256: str | None = None):
        """Registers a decoder file (decoders.py format) for this model under `name` (e.g.
        "perceptual"); loaded, and checked against `sha256` when given and against this model's
        weights, on first use."""
        if name not in DECODER_NAMES or name == DEFAULT_DECODER:
            raise PQCodecError(f"decoder name must be one of {', '.join(DECODER_NAMES[1:])}, got {name!r}")
        self._decoder_files[name] = (Path(path), sha256)
        self._decoders.pop(name, None)

    def decoders(self) -> tuple[str, ...]:
        """The decoders this codec can use: ("mse",), or ("mse", "perceptual") when the perceptual
        decoder's weights file for this model is present."""
        return (DEFAULT_DECODER,) + tuple(n for n in DECODER_NAMES[1:]
                                          if n in self._decoder_files and self._decoder_files[n][0].is_file())

    def decoder_net(self, decoder: str = DEFAULT_DECODER) -> torch.nn.Module:
        """The synthesis transform called `decoder` (loaded and checked on first use), or a one-line
        PQCodecError: an unknown name, or one this model has no weights for."""
        if not isinstance(decoder, str) or decoder not in DECODER_NAMES:
            raise PQCodecError(f"unknown decoder {decoder!r} (decoders: {', '.join(DECODER_NAMES)})")
        if decoder == DEFAULT_DECODER:
            return self.model.decoder
        if decoder in self._decoders:
            return self._decoders[decoder]
        if decoder not in self._decoder_files:
            raise UnsupportedFileError(f"{self.name} has no {decoder} decoder (it has: {', '.join(self.decoders())})")
        path, sha = self._decoder_files[decoder]
        if not path.is_file():
            raise ModelFilesError(f"{decoder} decoder weights of {self.name} not found at {path} "
                                  "(set PQCODEC_MODELS_DIR to the folder holding them)")
        if sha is not None and sha256_of(path) != sha:
            raise ModelFilesError(f"{path} does not match the SHA-256 recorded for the {decoder} decoder of {self.name}")
        # a decoder pairs with the weights file holding the autoencoder: a head file's base (model.py)
        autoencoder_sha256 = self.model.base_sha256 or self.weights_sha256
        if autoencoder_sha256 is None:
            raise UnsupportedFileError(f"{self.name}: its weights' SHA-256 is unknown, so no decoder file can pair with it")
        net = load_decoder(path, autoencoder_sha256, self.config.channels, self.model.quantizer.dim, decoder,
                           self.config.padding)
        self._decoders[decoder] = net.to(self.device)
        return self._decoders[decoder]

    def active_at(self, level: int) -> int:
        """Sub-quantizers in use at a level (1-based)."""
        return self.config.active_levels[level - 1]

    def max_steps(self) -> int:
        return self.token_coder.max_steps

    # -- image <-> tokens, in tiles ---------------------------------------------------------------
    def _tiles(self, h: int, w: int):
        """Token boxes (y0, y1, x0, x1) of the tile cores over an h x w grid (one, the whole grid, up
        to WHOLE x WHOLE), and of the same cores grown by TILE_HALO (clipped to the grid). Each
        tile's work runs with torch's threads on the cores idle as it starts (cores.idle_threads:
        beside a busy process one thread, not two that wait for each other). After each tile of
        several the heap's free pages go back to the system (heap.py), so that the leftovers of
        tiles of other shapes do not add up, nor stay under what comes next."""
        tile = max(h, w) if h <= WHOLE and w <= WHOLE else TILE
        for y0 in range(0, h, tile):
            for x0 in range(0, w, tile):
                core = (y0, min(y0 + tile, h), x0, min(x0 + tile, w))
                with idle_threads(self.device):
                    yield core, (max(0, y0 - TILE_HALO), min(h, core[1] + TILE_HALO),
                                 max(0, x0 - TILE_HALO), min(w, core[3] + TILE_HALO))
                if tile < max(h, w):
                    release_free_memory()

    def image_to_tokens(self, rgb: np.ndarray, active: int, candidates: int = 0, effort: int = 0):
        """uint8 (H, W, 3) -> indices (active, ceil(H/s), ceil(W/s)); edges padded by replication.
        candidates > 0: an rdoq.Analysis instead, the indices with each sub-vector's `candidates`
        nearest codewords and their latent squared errors (for RDOQ and rate control).
        effort > 0: the latent refined by that many steps first (refine.py), tile by tile."""
        s = self.config.stride
        H, W = rgb.shape[:2]
        h, w = self.grid_size(H, W)
        # an Analysis's indices as int16 (K <= 2^15, as the token coder's), as rate control holds them
        tokens = np.empty((active, h, w), dtype=np.int16 if candidates else np.int64)
        if candidates:
            count = min(candidates, self.config.codebook_size)
            cand = np.empty((active, h, w, count), dtype=_index_dtype(self.config.codebook_size))
            dist = np.empty((active, h, w, count), dtype=np.uint16)  # bfloat16 (rdoq.to_bfloat16)
        with numerics_fence():
            for (y0, y1, x0, x1), (Y0, Y1, X0, X1) in self._tiles(h, w):
                crop = rgb[Y0 * s:min(Y1 * s, H), X0 * s:min(X1 * s, W)]
                x = torch.from_numpy(np.array(crop)).to(self.device).permute(2, 0, 1)[None].float().div_(255)  # a writable copy
                x = F.pad(x, (0, -x.shape[3] % s, 0, -x.shape[2] % s), mode="replicate")
                core = np.s_[y0 - Y0:y1 - Y0, x0 - X0:x1 - X0]
                # model.image_to_tokens, from a refined latent, with the candidates from the same distances
                if effort:                                                   # judged on the core's own pixels
                    judged = (slice((y0 - Y0) * s, min((y1 - Y0) * s, crop.shape[0])),
                              slice((x0 - X0) * s, min((x1 - X0) * s, crop.shape[1])))
                    z = refine.refine_latent(self.model, x, active, effort, judged=judged)
                else:
                    z = self.model.encoder(x)
                if not candidates:
                    t = self.model.quantizer.encode(z, active)[0]
                else:
                    t, i, d = (r[0] for r in self.model.quantizer.encode(z, active, count))
                    cand[:, y0:y1, x0:x1] = i[(slice(None), *core)].cpu().numpy()
                    dist[:, y0:y1, x0:x1] = rdoq.to_bfloat16(d[(slice(None), *core)])
                tokens[:, y0:y1, x0:x1] = t[(slice(None), *core)].cpu().numpy()
        return rdoq.Analysis(tokens, cand, dist) if candidates else tokens

    def tokens_to_image(self, tokens: np.ndarray, height: int, width: int, decoder: str = DEFAULT_DECODER,
                        precise: bool = False) -> np.ndarray:
        """indices (active, h, w) -> uint8 (height, width, 3), by the decoder so named (`decoders()`);
        a mapped file's UNUSED indices (bitstream.py) get the quantizer's filler, as the sub-quantizers
        beyond a level do. precise: the synthesis in float64 (_synthesis64), for the small grids of
        generated files."""
        net = self.decoder_net(decoder)
        s = self.config.stride
        active, h, w = tokens.shape
        counts = None                                             # (h, w) per position: a mapped file's tokens
        if tokens.size and tokens.min() < 0:
            try:
                counts = torch.from_numpy(position_counts(tokens)).to(self.device)
            except ValueError as e:
                raise PQCodecError(str(e)) from None
        out = np.empty((height, width, 3), dtype=np.uint8)
        synthesis = self._synthesis64 if precise else self.model.tokens_to_image
        with numerics_fence():
            for (y0, y1, x0, x1), (Y0, Y1, X0, X1) in self._tiles(h, w):
                t = torch.from_numpy(np.ascontiguousarray(tokens[:, Y0:Y1, X0:X1])).to(self.device, torch.long)[None]
                x = synthesis(t, active if counts is None else counts[None, Y0:Y1, X0:X1], net)[0]
                x = x[:, (y0 - Y0) * s:(y1 - Y0) * s, (x0 - X0) * s:(x1 - X0) * s]
                rows, cols = min(y1 * s, height) - y0 * s, min(x1 * s, width) - x0 * s
                out[y0 * s:y0 * s + rows, x0 * s:x0 * s + cols] = (
                    x[:, :rows, :cols].mul(255).round_().to(torch.uint8).permute(1, 2, 0).cpu().numpy())
        return out

    # -- the whole file --------------------------------------------------------------------------
    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        s = self.config.stride
        return math.ceil(height / s), math.ceil(width / s)

    def encode_with_stats(self, image, quality: int | None = None, steps: int | None = DEFAULT_STEPS,
                          *, name: str | None = None, rd_lambda: float = 0.0,
                          distortion: str = "latent", effort: int = 0, flat: bool = True) -> tuple[bytes, CodingStats]:
        """image: any source image.load_image takes; errors name it `name` (default: its path,
        <bytes>, ...). quality: the level, 1..num_levels() (None: the model's default); steps: None for
        DEFAULT_STEPS.
        rd_lambda > 0: RDOQ (rdoq.py), the encoder trades distortion for bits at that λ
        (`distortion` "latent" or "pixel"); 0 is the plain quantizer. effort > 0: that many steps
        of latent refinement first (refine.py). The decoder is the same. flat: send the image's
        flat blocks (flat.py; a file without them when False)."""
        quality = self.default_level if quality is None else quality
        _check_level("quality", quality, self.num_levels())
        steps = self.check_steps(steps)
        rd_lambda = rdoq.check_lambda(rd_lambda)
        effort = refine.check_effort(effort)
        rgb, grey = load_image(image, name)
        size, active = rgb.shape[:2], self.active_at(quality)
        layer = flat_blocks.layer_of(rgb, grey) if flat else None
        if rd_lambda == 0:
            tokens = self.image_to_tokens(rgb, active, effort=effort)
            del rgb  # the token coder needs no pixels: 72 MB less at 24 MP while it runs
            return self.encode_analysed(tokens, size, grey, steps, flat=layer)
        analysis = self.image_to_tokens(rgb, active, candidates=rdoq.CANDIDATES, effort=effort)
        choose = rdoq.chooser(self, analysis, active, rd_lambda, distortion)
        del rgb
        return self.encode_analysed(analysis.tokens, size, grey, steps, choose, flat=layer)

    def encode_analysed(self, tokens: np.ndarray, size: tuple[int, int], greyscale: bool, steps: int,
                        choose=None, flat: bytes | None = None) -> tuple[bytes, CodingStats]:
        """The file of an image's plain tokens (active, h, w), its size (H, W), coded as they are or
        as `choose` (an rdoq.Chooser) picks, with the image's flat layer `flat` (flat.layer_of;
        None: none); CodingStats.tokens are the tokens coded."""
        data, c = self._pack(tokens, size[0], size[1], greyscale, steps, choose, flat=flat)
        grid = math.ceil(c.tokens.shape[1] / self.config.window), math.ceil(c.tokens.shape[2] / self.config.window)
        return data, CodingStats(c.bits, int((c.tokens >= 0).sum()), len(data), len(data) - len(c.payload), c.tokens,
                                 c.window_bits.reshape(grid), len(flat or b""))

    def encode_tokens(self, tokens: np.ndarray, height: int, width: int, greyscale: bool = False,
                      steps: int = DEFAULT_STEPS, generated: Generated | None = None, flat: bytes | None = None) -> bytes:
        """The file of given tokens (sub-quantizers in use, ceil(height/s), ceil(width/s), or a
        generated file's grid; a mapped file's, UNUSED beyond each window's count): what `encode`
        writes for an image with these tokens, and the flat layer `flat`. Re-encoding a decoded
        file's tokens (with its header's `generated` and `flat`) gives back its bytes, on any machine."""
        tokens = np.asarray(tokens)
        grid = (generated.grid_height, generated.grid_width) if generated else self.grid_size(height, width)
        if tokens.ndim != 3 or tokens.shape[0] not in self.config.active_levels or tokens.shape[1:] != grid:
            raise PQCodecError(f"tokens of shape {tokens.shape} do not fit a {width}x{height} image at any level")
        if tokens.size and (tokens.min() < UNUSED or tokens.max() >= self.config.codebook_size):
            raise PQCodecError(f"token values must be in 0..{self.config.codebook_size - 1} (or {UNUSED}: unused)")
        if tokens.size and tokens.min() < 0:
            if generated:
                raise PQCodecError("a generated file's tokens cannot have unused indices")
            try:
                self.token_coder.window_counts(tokens)
            except ValueError as e:
                raise PQCodecError(f"tokens with unused indices: {e}") from None
        steps = self.check_steps(steps)
        if flat is not None:
            flat_blocks.decode(flat, self.grid_size(height, width), 1 if greyscale else 3)  # a layer a reader takes
        return self._pack(tokens, height, width, greyscale, steps, generated=generated, flat=flat)[0]

    def encode_mapped(self, tokens: np.ndarray, counts: np.ndarray, size: tuple[int, int], greyscale: bool,
                      steps: int, flat: bytes | None = None) -> tuple[bytes, CodingStats]:
        """The file of an image's plain tokens (>= the highest count, h, w) with a level per prior
        window: counts (windows high, windows wide) sub-quantizers, each a level of the model. A
        mapped file (format version 5) unless every window has the same count (a plain file).
        flat: as encode_analysed."""
        top = int(counts.max())
        grid = np.kron(counts, np.ones((self.config.window,) * 2, dtype=np.int64))[:tokens.shape[1], :tokens.shape[2]]
        mapped = np.where(np.arange(top)[:, None, None] < grid, tokens[:top], UNUSED)
        return self.encode_analysed(mapped, size, greyscale, steps, flat=flat)

    def check_steps(self, steps: int | None) -> int:
        """steps, or DEFAULT_STEPS for None, once checked to be a whole number the model's windows allow."""
        steps = DEFAULT_STEPS if steps is None else steps
        _check_level("steps", steps, self.max_steps())
        return steps

    def _pack(self, tokens, height, width, greyscale, steps, choose=None, generated: Generated | None = None,
              flat: bytes | None = None) -> tuple[bytes, CompressedTokens]:
        """(file, what the token coder made: its payload, ideal bits, and the tokens coded: `tokens`,
        or what `choose` chose, or with a generated file's draws); flat: the header's flat layer"""
        c = self.token_coder.compress(tokens, steps, choose, generated)
        header = Header(self.model_hash, c.tokens.shape[0], steps, height, width, greyscale,
                        c.checksum, generated, c.mapped, self.config.conditional, flat)
        return bitstream.pack(header, c.payload), c

    def encode_generated(self, tokens: np.ndarray, size: tuple[int, int], greyscale: bool, steps: int,
                         generated: Generated, flat: bytes | None = None) -> tuple[bytes, np.ndarray]:
        """A generated file (extreme.py): `tokens` (active, grid h, grid w) are the plain indices of
        the image shrunk to 8 x the grid, size (H, W) the image's; the steps from generated.sent on
        are drawn; flat: as encode_analysed. Returns the file and the whole grid the decoder will
        have (drawn indices included)."""
        data, c = self._pack(tokens, size[0], size[1], greyscale, steps, generated=generated, flat=flat)
        return data, c.tokens

    def render(self, header: Header, tokens: np.ndarray, decoder: str = DEFAULT_DECODER) -> np.ndarray:
        """The uint8 (height, width, 3) image of a file's decoded tokens, by the decoder so named,
        with the file's flat blocks painted over it."""
        if header.generated:
            image = self.render_generated(tokens, header.height, header.width, decoder)
        else:
            image = self.tokens_to_image(tokens, header.height, header.width, decoder)
        return flat_blocks.paint(image, flat_blocks.of_header(header))

    def render_generated(self, tokens: np.ndarray, height: int, width: int, decoder: str = DEFAULT_DECODER) -> np.ndarray:
        """A generated file's image: its grid (active, grid h, grid w) decoded in float64, then
        resized to height x width (bitstream.RESIZE_FILTER). In float32 the synthesis's last bits
        differ between thread counts and kernel families, and flip the rounding of a pixel now and
        then (1 pixel of kodim08's 200-byte file with 2 threads against 1); float64's differences
        (~1e-15) do not reach a rounding step, and a grid this small costs little either way."""
        s = self.config.stride
        small = self.tokens_to_image(tokens, tokens.shape[1] * s, tokens.shape[2] * s, decoder, precise=True)
        return resize(small, height, width)

    @functools.cached_property
    def _quantizer64(self):
        """The quantizer (its codebooks and fillers) in float64, for _synthesis64."""
        return copy.deepcopy(self.model.quantizer).double()

    def _synthesis64(self, tokens: torch.Tensor, active: int, net: torch.nn.Module) -> torch.Tensor:
        """model.tokens_to_image in float64: the quantizer's and the decoder `net`'s float64 copies
        (made once per decoder)."""
        if net not in self._nets64:
            self._nets64[net] = copy.deepcopy(net).double()
        return self._nets64[net](self._quantizer64.decode(tokens, active)).clamp(0, 1)

    def encode(self, image, quality: int | None = None, steps: int | None = DEFAULT_STEPS, *,
               name: str | None = None, rd_lambda: float = 0.0, effort: int = 0, flat: bool = True) -> bytes:
        """rd_lambda: RDOQ's λ at this quality (rdoq.py); effort: steps of latent refinement
        (refine.py); flat: send the flat blocks (flat.py). A size instead of a quality (max_bytes,
        bpp): ratecontrol.encode_to_size, or pqcodec.encode."""
        return self.encode_with_stats(image, quality, steps, name=name, rd_lambda=rd_lambda, effort=effort,
                                      flat=flat)[0]

    def decode_tokens(self, data: bytes) -> tuple[Header, np.ndarray]:
        header, payload = bitstream.unpack(data)
        if header.model_hash != self.model_hash:
            raise UnsupportedFileError(f"file was made with model {header.model_hash.hex()}, not with this "
                                       f"codec's {self.model_hash.hex()}")
        if header.conditional != self.config.conditional:
            raise CorruptFileError(f"a format {header.version} file of a model {'without' if self.config.conditional else 'with'}"
                                   " a conditional head (damaged or forged)")
        if header.active not in self.config.active_levels:
            raise CorruptFileError(f"file uses {header.active} sub-quantizers; the model's levels use "
                                   f"{', '.join(map(str, self.config.active_levels))}")
        if header.steps > self.max_steps():
            raise CorruptFileError(f"file claims {header.steps} steps; the model's windows allow {self.max_steps()}")
        flat_blocks.of_header(header)  # a damaged flat layer fails before the tokens' work
        tokens = self.token_coder.decompress(payload, header.active, *header.grid(), header.steps, header.checksum,
                                             header.generated, header.mapped)
        return header, tokens

    def decode(self, source, *, name: str | None = None, decoder: str = DEFAULT_DECODER):
        """source: the file's bytes (bytes, bytearray, memoryview), its path, or a binary file object
        (read bounded); errors name it `name` (default: its path, <bytes>, ...). decoder: "mse" (the
        default) or another of `decoders()`: the same tokens, another synthesis transform."""
        data, name = coded_input(source, name)
        with named(name):
            self.decoder_net(decoder)  # an unknown or missing decoder fails before the work
            header, tokens = self.decode_tokens(data)
            image = self.render(header, tokens, decoder)
            del tokens  # not needed beside Pillow's copy of the image (24 MP: 12 MB)
            return to_pil(image, header.greyscale)


def _index_dtype(codebook_size: int):
    """The smallest integer type of a codebook's indices (RDOQ's candidates: 8 per index)."""
    return next(t for t in (np.uint8, np.int16, np.int32) if codebook_size <= np.iinfo(t).max + 1)


def resize(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (h, w, 3) -> (height, width, 3) with bitstream.RESIZE_FILTER: what a generated file's
    decoder does to its grid's image, and its encoder to the input (Pillow resamples 8-bit images in
    fixed point)."""
    if rgb.shape[:2] == (height, width):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((width, height), getattr(Image.Resampling, bitstream.RESIZE_FILTER)))


def _check_level(what: str, value, highest: int):
    """A quality or a step count: a whole number (an int or numpy integer, not a bool) in 1..highest."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InputTypeError(f"{what} must be a whole number in 1..{highest}, got {value!r} ({type(value).__name__})")
    if not 1 <= value <= highest:
        raise PQCodecError(f"{what} must be in 1..{highest} for this model, got {value}")
