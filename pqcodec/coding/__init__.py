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

The names are imported on first use (so the container's light parts, layout.py and schedule.py,
import without torch, and `pqcodec --help` or `pqcodec info` start quickly).

Changing anything here changes files: bump bitstream.FORMAT_VERSION (layout.py says what the payload
is; docs/bitstream.md, field by field).
"""
import importlib

# each public name and the module that defines it
_HOMES = {name: module for module, names in {
    "entropy": ("BACKEND_VARIABLE", "BACKENDS", "RangeDecoder", "RangeEncoder", "backend", "uniform_weights"),
    "integer_conditional": ("IntConditionalHead",),
    "integer_prior": ("IntegerPrior",),
    "kernels": ("int8_products",),
    "layout": ("CHUNK_CHECK_BYTES", "PROB_BITS", "UNUSED", "WINDOW_CHUNK", "chunk_check", "from_windows", "inside",
               "map_weights", "max_payload_bytes", "position_counts", "to_windows", "token_checksum", "window_grid",
               "window_validity"),
    "schedule": ("DEFAULT_STEPS", "DrawnSteps", "Schedule", "cosine_boundaries", "sample_symbols"),
    "token_coder": ("CompressedTokens", "TokenCoder"),
}.items() for name in names}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
