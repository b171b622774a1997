"""What to encode an image to, decided in one place: a level, or a size in bytes or bits per pixel,
and how. `pqcodec.encode`, the CLI (one file or a folder, jobs.py) and `pqcodec compare` each build
one `EncodeRequest` and have it make the file (`file_of`); none of them chooses between a level and a size.

Where the networks run (the device) is not part of it: it is the run's, and decoding needs it too
(jobs.CodingOptions, pqcodec.encode's `device`).
"""
from dataclasses import dataclass

from .errors import PQCodecError
from .words import counted


class RequestError(PQCodecError):
    """Options that do not go together (a level and a size, effort with a size, ...)."""


@dataclass(frozen=True)
class Encoded:
    """What a request made of one image."""
    data: bytes
    setting: str              # what was chosen, in words: "level 3", or rate control's choice
    summary: str | None = None  # rate control's line on what it chose and what the search cost


@dataclass(frozen=True)
class EncodeRequest:
    """quality: a level, 1..the model's levels (None: the model's default); or max_bytes or bpp: the
    best level (or level map, RDOQ, shrunken grid) whose file fits (ratecontrol.py). steps: coding
    steps per window (None: the default). effort (with a level): steps of latent refinement
    (refine.py). rd_lambda (with a level): RDOQ's λ (rdoq.py). generative (with a size): below the
    lowest level, partly drawn grids (extreme.py). flat: send the flat blocks (flat.py).
    The values themselves (a level the model has, a step count, an effort) are checked by the codec
    that runs it (a size: ratecontrol.budget); `check` says which options do not go together."""
    quality: int | None = None
    max_bytes: int | None = None
    bpp: float | None = None
    steps: int | None = None
    effort: int = 0
    rd_lambda: float = 0.0
    generative: bool = False
    flat: bool = True

    @property
    def by_size(self) -> bool:
        return self.max_bytes is not None or self.bpp is not None

    def check(self, option=lambda field: field) -> "EncodeRequest":
        """self, or a RequestError for options that do not go together; option(field name) spells a
        field as the caller's user knows it (the CLI: "--max-bytes")."""
        size = f"a size ({option('max_bytes')} or {option('bpp')})"
        if self.by_size and (self.quality is not None or self.rd_lambda):
            raise RequestError(f"give either {size} or {option('quality')}/{option('rd_lambda')}, not both")
        if self.generative and not self.by_size:
            raise RequestError(f"{option('generative')} needs {size}")
        if self.effort and self.by_size:
            raise RequestError(f"{option('effort')} works with {option('quality')}, not with {size} yet")
        return self

    def file_of(self, codec, image, name: str | None = None) -> Encoded:
        """The file of `image` (any source image.load_image takes; errors call it `name`) with `codec`."""
        self.check()
        if self.by_size:
            from .ratecontrol import encode_to_size
            r = encode_to_size(codec, image, max_bytes=self.max_bytes, bpp=self.bpp, steps=self.steps, name=name,
                               generative=self.generative, flat=self.flat)
            return Encoded(r.data, f"{r.setting()} ({counted(r.encodes, 'coder pass', 'coder passes')})", r.summary())
        quality = codec.default_level if self.quality is None else self.quality
        data = codec.encode(image, quality, self.steps, name=name, rd_lambda=self.rd_lambda, effort=self.effort,
                            flat=self.flat)
        return Encoded(data, f"level {quality}")

    def describe(self, codec, height: int, width: int) -> str:
        """What was asked, in words, for an image of this size."""
        if self.max_bytes is not None:
            return f"the best quality in at most {counted(self.max_bytes, 'byte')} (rate control)"
        if self.bpp is not None:
            from .ratecontrol import budget
            n = budget(bpp=self.bpp, height=height, width=width)
            return f"the best quality in at most {self.bpp:g} bpp = {counted(n, 'byte')} (rate control)"
        if self.quality is None:
            return f"level {codec.default_level} (the model's default) of {codec.num_levels()}"
        return f"level {self.quality} of {codec.num_levels()}"
