"""Range coding of categorical symbols with constriction: one call per coding step, never a Python
loop per symbol. The payload is the coder's uint32 words, little-endian.

The models are integer frequency tables, handed over exactly. A table is given as `weights`: float64
arrays holding integers >= 0 that sum to 2^PROB_BITS - K in every row (the prior's output). For
`Categorical(perfect=False)` constriction quantizes probabilities as
left_cdf[i] = floor(sum(p[:i]) * (2^24 - K) / sum(p)) + i; with integer weights summing to exactly
2^24 - K the float64 sums are exact and the scale is 1, so symbol i gets frequency weights[i] + 1
out of 2^24: the same integers on every machine.
"""
import numpy as np
import constriction

from .bitstream import PROB_BITS
from .errors import CorruptFileError

_FAMILY = constriction.stream.model.Categorical(perfect=False)


def uniform_weights(n: int, K: int = 256) -> np.ndarray:
    """n rows of the uniform table over K symbols (K a power of two): each symbol 2^24 / K."""
    return np.full((n, K), float((1 << PROB_BITS) // K - 1))


class RangeEncoder:
    def __init__(self):
        self._coder = constriction.stream.queue.RangeEncoder()

    def encode(self, symbols: np.ndarray, weights: np.ndarray):
        """symbols (n,) in [0, K); weights (n, K) as above."""
        if len(symbols):
            self._coder.encode(symbols.astype(np.int32), _FAMILY, weights)

    def payload(self) -> bytes:
        return self._coder.get_compressed().astype("<u4").tobytes()


class RangeDecoder:
    def __init__(self, payload: bytes):
        if len(payload) % 4:
            raise CorruptFileError("the file is truncated or damaged (payload length is not a whole number of 32-bit words)")
        self._coder = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))

    def decode(self, weights: np.ndarray) -> np.ndarray:
        if not len(weights):
            return np.zeros(0, dtype=np.int64)
        try:
            return self._coder.decode(_FAMILY, weights).astype(np.int64)
        except Exception as e:  # constriction raises on a payload that cannot be a valid encoding
            raise CorruptFileError(f"payload does not decode ({e})") from None

    def exhausted(self) -> bool:
        return self._coder.maybe_exhausted()
