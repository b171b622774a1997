"""Range coding of categorical symbols with constriction: one call per coding step, never a Python
loop per symbol. The payload is the coder's uint32 words, little-endian."""
import numpy as np
import constriction

from .errors import CorruptFileError

_FAMILY = constriction.stream.model.Categorical(perfect=False)


class Encoder:
    def __init__(self):
        self._coder = constriction.stream.queue.RangeEncoder()

    def encode(self, symbols: np.ndarray, probabilities: np.ndarray):
        """symbols (n,) in [0, K); probabilities (n, K) float64, rows summing to 1."""
        if len(symbols):
            self._coder.encode(symbols.astype(np.int32), _FAMILY, probabilities)

    def payload(self) -> bytes:
        return self._coder.get_compressed().astype("<u4").tobytes()


class Decoder:
    def __init__(self, payload: bytes):
        if len(payload) % 4:
            raise CorruptFileError("payload length is not a whole number of 32-bit words")
        self._coder = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))

    def decode(self, probabilities: np.ndarray) -> np.ndarray:
        if not len(probabilities):
            return np.zeros(0, dtype=np.int64)
        try:
            return self._coder.decode(_FAMILY, probabilities).astype(np.int64)
        except Exception as e:  # constriction raises on a payload that cannot be a valid encoding
            raise CorruptFileError(f"payload does not decode ({e})") from None

    def exhausted(self) -> bool:
        return self._coder.maybe_exhausted()
