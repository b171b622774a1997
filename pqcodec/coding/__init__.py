"""The coding core: everything between a token grid and its payload bytes, and nothing else.

    coder = TokenCoder(integer_prior, window, schedule_seed, levels, head)
    compressed = coder.compress(tokens, steps)          # tokens (active, h, w) -> CompressedTokens
    tokens = coder.decompress(compressed.payload, active, h, w, steps)

The rest of pqcodec uses the names exported here, and only those:
- layout.py: the window grid and chunks, the probability precision (PROB_BITS), the checks;
- schedule.py: the order in which a window's positions are revealed, a generated file's draws;
- integer_prior.py, integer_conditional.py: the prior and conditional head at run time, integer-exact
  on every machine (their calibration from trained float nets is training's: train/calibrate.py);
- kernels.py: which kernel computes their products here (speed only: the integers are the same);
- entropy.py: the range coder (constriction's, or rangecoder.py's pure Python one: the same words);
- token_coder.py: `TokenCoder`, the one object that runs them together.

Changing anything here changes files: bump bitstream.FORMAT_VERSION (layout.py says what the payload
is; docs/bitstream.md, field by field).
"""
from .entropy import BACKEND_VARIABLE, BACKENDS, RangeDecoder, RangeEncoder, backend, uniform_weights
from .integer_conditional import IntConditionalHead
from .integer_prior import IntegerPrior
from .kernels import int8_products
from .layout import (CHUNK_CHECK_BYTES, PROB_BITS, UNUSED, WINDOW_CHUNK, chunk_check, from_windows, inside, map_weights,
                     max_payload_bytes, position_counts, to_windows, token_checksum, window_grid, window_validity)
from .schedule import DrawnSteps, Schedule, cosine_boundaries, sample_symbols
from .token_coder import CompressedTokens, TokenCoder

__all__ = ["TokenCoder", "CompressedTokens", "IntegerPrior", "IntConditionalHead", "DrawnSteps", "Schedule",
           "cosine_boundaries", "sample_symbols", "RangeEncoder", "RangeDecoder", "backend", "BACKENDS",
           "BACKEND_VARIABLE", "uniform_weights", "int8_products", "PROB_BITS", "WINDOW_CHUNK", "CHUNK_CHECK_BYTES",
           "UNUSED", "window_grid", "to_windows", "from_windows", "window_validity", "inside", "position_counts",
           "token_checksum", "chunk_check", "map_weights", "max_payload_bytes"]
