"""Range coding of categorical symbols: one coder call per coding step. The payload is the coder's
uint32 words, little-endian.

Two backends write the same words: constriction 0.5.0 (`constriction.stream.queue`, Rust) when it
can be imported, else pqcodec.coding.rangecoder, a pure Python + numpy re-implementation of its algorithm
(constriction has no wheels for Linux ARM64 or musl, and no source distribution); a few times
slower, about +0.1 s per Kodak image each way. The environment variable
PQCODEC_RANGE_CODER=constriction|python forces one (empty or "auto": the default); `backend()` says
which is in use; tests pick one per coder with `RangeEncoder(backend="python")` /
`RangeDecoder(payload, backend="python")`.

The models are integer frequency tables, handed over exactly. A table is given as `weights`: float64
arrays holding integers >= 0 that sum to 2^PROB_BITS - K in every row (the prior's output). For
`Categorical(perfect=False)` constriction quantizes probabilities as
left_cdf[i] = floor(sum(p[:i]) * (2^24 - K) / sum(p)) + i; with integer weights summing to exactly
2^24 - K the float64 sums are exact and the scale is 1, so symbol i gets frequency weights[i] + 1
out of 2^24: the same integers on every machine.

The decoder also knows where a payload ends: the symbols it decodes are coded again as it goes (by
the same backend's RangeEncoder), and a valid payload is exactly the words the encoder writes for
them, its seal included (`left_over`). A decoder state
holds two words, so neither coder's maybe_exhausted() sees a word appended after the seal.
"""
import os

import numpy as np

try:
    import constriction
except ImportError:     # no wheel for this platform: the pure Python coder takes over
    constriction = None

from ..errors import CorruptFileError, PQCodecError
from . import rangecoder
from .layout import PROB_BITS

BACKENDS = ("constriction", "python")
BACKEND_VARIABLE = "PQCODEC_RANGE_CODER"


def backend() -> str:
    """The range coder in use, "constriction" or "python": $PQCODEC_RANGE_CODER if set (empty or "auto"
    for the default), else constriction when it can be imported, else python. A forced constriction
    that is not installed, or an unknown name, raises PQCodecError."""
    return choose_backend(None)


def choose_backend(requested: str | None) -> str:
    """`requested` ("constriction" or "python") checked, or for None the default of backend()."""
    source = "backend"
    if requested is None:
        requested, source = os.environ.get(BACKEND_VARIABLE, "").strip().lower(), BACKEND_VARIABLE
    if requested in ("", "auto"):
        return "constriction" if constriction is not None else "python"
    if requested not in BACKENDS:
        raise PQCodecError(f"{source}={requested!r} is not a range coder (choose constriction or python)")
    if requested == "constriction" and constriction is None:
        raise PQCodecError(f"{source}=constriction, but constriction is not installed "
                           f"(pip install constriction==0.5.0, or use {BACKEND_VARIABLE}=python)")
    return requested


def uniform_weights(n: int, K: int = 256) -> np.ndarray:
    """n rows of the uniform table over K symbols (K a power of two): each symbol 2^24 / K."""
    return np.full((n, K), float((1 << PROB_BITS) // K - 1))


class RangeEncoder:
    def __init__(self, backend: str | None = None):
        self.backend = choose_backend(backend)
        if self.backend == "constriction":
            self._family = constriction.stream.model.Categorical(perfect=False)
            self._coder = constriction.stream.queue.RangeEncoder()
        else:
            self._coder = rangecoder.RangeEncoder()

    def encode(self, symbols: np.ndarray, weights: np.ndarray):
        """symbols (n,) in [0, K); weights (n, K) as above."""
        if not len(symbols):
            return
        if self.backend == "constriction":
            self._coder.encode(symbols.astype(np.int32), self._family, weights)
        else:
            self._coder.encode(symbols, weights)

    def words(self) -> np.ndarray:
        """The sealed stream as uint32 words (the encoder may go on encoding)."""
        return np.asarray(self._coder.get_compressed(), dtype=np.uint32)

    def payload(self) -> bytes:
        return self.words().astype("<u4").tobytes()


class RangeDecoder:
    def __init__(self, payload: bytes, backend: str | None = None):
        self.backend = choose_backend(backend)
        if len(payload) % 4:
            raise CorruptFileError("the file is truncated or damaged (payload length is not a whole number of 32-bit words)")
        words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
        if self.backend == "constriction":
            self._family = constriction.stream.model.Categorical(perfect=False)
            self._coder = constriction.stream.queue.RangeDecoder(words)
        else:
            self._coder = rangecoder.RangeDecoder(words)
        self._words = words
        self._recoder = RangeEncoder(self.backend)  # the decoded symbols coded again (module docstring)

    def decode(self, weights: np.ndarray) -> np.ndarray:
        if not len(weights):
            return np.zeros(0, dtype=np.int64)
        try:
            if self.backend == "constriction":
                symbols = self._coder.decode(self._family, weights).astype(np.int64)
            else:
                symbols = self._coder.decode(weights)
        except Exception as e:  # both coders raise on a payload that cannot be a valid encoding
            raise CorruptFileError(f"payload does not decode ({e})") from None
        self._recoder.encode(symbols, weights)
        return symbols

    def left_over(self) -> int | None:
        """After the last symbol: how many bytes of the payload follow the words the encoder writes
        for the symbols decoded (0 for a valid payload), or None when the payload does not start with
        those words (truncated or damaged)."""
        words = self._recoder.words()
        if not np.array_equal(self._words[:len(words)], words):
            return None
        return 4 * (len(self._words) - len(words))
