"""The coding core: everything between a token grid and its payload bytes, and nothing else.

    coder = TokenCoder(integer_prior, window, schedule_seed, levels, head)
    compressed = coder.compress(tokens, steps)          # tokens (active, h, w) -> CompressedTokens
    tokens = coder.decompress(compressed.payload, active, h, w, steps)

The rest of pqcodec imports these modules' public names, never one that starts with "_":
- layout.py: the window grid and chunks, the probability precision (PROB_BITS), the checks;
- schedule.py: the order in which a window's positions are revealed, a generated file's draws;
- integer_prior.py, integer_conditional.py: the prior and conditional head at run time, integer-exact
  on every machine (their calibration from trained float nets is training's: train/calibrate.py);
- kernels.py: which kernel computes their products here (speed only: the integers are the same);
- entropy.py: the range coder (constriction's, or rangecoder.py's pure Python one: the same words);
- window_groups.py: a chunk's windows on several threads where cores are idle (speed only: the
  same bytes);
- token_coder.py: `TokenCoder`, the one object that runs them together.

Changing anything here changes files: bump bitstream.FORMAT_VERSION (layout.py says what the payload
is; docs/bitstream.md, field by field).
"""
