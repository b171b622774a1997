"""Coding the token grid: the integer prior, the schedule, the window chunks and the range coder in
one object, with CompressAI's contract: `compress(tokens) -> payload`, `decompress(payload) ->
tokens`. layout.py and schedule.py define the order it follows; `Codec` (codec.py) keeps images,
tiles and the container (bitstream.py).

The prior is integer-exact (integer_prior.py): its frequencies do not depend on batch shape,
thread count, instruction set or device, so a chunk's windows go through it as one batch, or, where
cores are idle, as a group of windows per thread (window_groups.py). Each thread's operations run on
one torch thread (numerics.one_thread): they are too small to pay for more, and with more the loop
collapses when another process holds a core. Encoder and decoder run the same step-by-step
loop with cached keys and values (`_code_chunk`): the encoder could get the same integers in one teacher-forced pass
(`IntegerPrior.frequencies`), but the step-causal loop computes only the attention it needs and
is faster. With a conditional head (format 6), each step's indices go sub-quantizer by
sub-quantizer, each table from the prior's logits plus the head's term from the lower indices
(`_code_conditional`).
"""
import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import CorruptFileError
from ..heap import release_free_memory
from ..numerics import numerics_fence, one_thread
from ..words import counted
from .entropy import RangeDecoder, RangeEncoder, uniform_weights
from .integer_conditional import IntConditionalHead
from .integer_prior import IntegerPrior
from .kernels import int8_products
from .layout import (CHUNK_CHECK_BYTES, PROB_BITS, UNUSED, WINDOW_CHUNK, chunk_check, from_windows, inside,
                     map_weights, max_payload_bytes, position_counts, to_windows, token_checksum, window_grid,
                     window_validity, windows_of)
from . import window_groups
from .schedule import DrawnSteps, Schedule, sample_symbols


class Draws:
    """A generated file's drawn indices: at the schedule's steps from `sent` on, every index is drawn
    from the prior's table with schedule.sample_symbols instead of coded, in coding order (chunks,
    steps, windows, positions, sub-quantizers), the same on the encoder's side and the decoder's."""

    def __init__(self, drawn: DrawnSteps):
        self.drawn, self.count = drawn, 0

    @property
    def sent(self) -> int:
        return self.drawn.sent

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        symbols = sample_symbols(weights, self.drawn.sharpen, self.drawn.seed, self.count)
        self.count += len(symbols)
        return symbols


@dataclass
class CompressedTokens:
    """What `TokenCoder.compress` made."""
    payload: bytes
    bits: float               # its ideal length under the prior, in bits (the map and checks left out)
    window_bits: np.ndarray   # (windows,) the same per window, windows row-major
    tokens: np.ndarray        # the tokens coded (active, h, w): the input, or what `choose` chose,
                              # or with a generated file's draws
    mapped: bool              # a level per window: the payload starts with the level map
    checksum: int             # token_checksum of `tokens`, which the decoder checks (the header holds it)


class TokenCoder:
    def __init__(self, prior: IntegerPrior, window: int, schedule_seed: int, levels: tuple[int, ...],
                 head: IntConditionalHead | None = None):
        """levels: the model's level table (sub-quantizers per level), the alphabet of a mapped
        file's level map. head: the model's conditional head, if it has one: each step's indices are
        then coded sub-quantizer by sub-quantizer, each with the tables the lower ones' indices at the
        same position give (format 6, docs/bitstream.md)."""
        self.prior, self.window, self.seed, self.head = prior, window, schedule_seed, head
        self.M, self.K = prior.M, prior.K
        self.levels = tuple(levels)
        # a schedule reveals at least one position per step, and the header has one byte for it
        self.max_steps = min(255, window ** 2)
        # threads per window chunk: None decides for each chunk (window_groups.coder_threads); a count
        # sets it (the bytes are the same at any count)
        self.threads: int | None = None

    def _threads(self, windows: int, budget: int) -> int:
        if self.threads is not None:
            return max(1, min(self.threads, windows))
        return window_groups.coder_threads(windows, budget, self.prior.start.device)

    def schedule(self, steps: int) -> Schedule:
        return Schedule(self.window, steps, self.seed)

    def window_counts(self, tokens: np.ndarray) -> np.ndarray:
        """(windows,) the sub-quantizers each window of `tokens` (active, h, w) uses: the leading
        indices that are not UNUSED, the same at every position of a window. ValueError otherwise,
        or for a count that is no level of the model."""
        _, h, w = tokens.shape
        counts = position_counts(tokens)                                                 # (h, w)
        per_window = to_windows(torch.from_numpy(counts)[None], self.window)[..., 0]      # (windows, N)
        valid = window_validity(h, w, self.window)
        first = per_window[:, 0]
        if not bool(((per_window == first[:, None]) | ~valid).all()):
            raise ValueError("a window's positions must all use the same number of sub-quantizers")
        bad = sorted(set(first.tolist()) - set(self.levels))
        if bad:
            raise ValueError(f"window counts {bad} are no level of the model ({', '.join(map(str, self.levels))})")
        return first.numpy()

    def _map_choices(self, active: int) -> int:
        """Symbols of a mapped file's level map: the model's levels up to `active`."""
        return sum(1 for c in self.levels if c <= active)

    def _layout(self, h: int, w: int, steps: int, active: int, counts: np.ndarray | None = None):
        """valid (windows, N) positions inside the image, the schedule, and the window chunks as
        (sub-quantizers, windows: a slice or an index tensor): WINDOW_CHUNK windows at a time in
        row-major order, all with `active`, or, with a level map's `counts` (windows,), in groups of
        one count each, the lowest first (docs/bitstream.md)."""
        valid = window_validity(h, w, self.window).to(self.prior.start.device)
        if counts is None:
            return valid, self.schedule(steps), [(active, slice(c, min(c + WINDOW_CHUNK, len(valid))))
                                                 for c in range(0, len(valid), WINDOW_CHUNK)]
        chunks = []
        for c in sorted(set(counts.tolist())):
            group = torch.from_numpy(np.nonzero(counts == c)[0])  # CPU indices: they index CPU and device tensors
            chunks += [(c, group[i:i + WINDOW_CHUNK]) for i in range(0, len(group), WINDOW_CHUNK)]
        return valid, self.schedule(steps), chunks

    def _code_chunk(self, chunk_valid: torch.Tensor, active: int, schedule: Schedule, code_step,
                    draws: Draws | None = None, budget: int = 1, by_share: bool = False, known=None) -> torch.Tensor:
        """Runs the schedule over one chunk's windows with cached keys and values. At each step,
        code_step(weights (m, K) float64, pos, sel, subq) gets the frequency tables of the indices
        revealed there of the sub-quantizers `subq` (a slice: all in use at once, windows in order,
        then positions in schedule order, then sub-quantizers; with a conditional head one at a time,
        windows then positions) and returns their symbols (m,): the encoder's true ones, once coded,
        or the decoder's decoded ones; from step draws.sent on (a generated file), `draws` gives them
        instead. Where `_threads` gives more than one thread within `budget` (torch's threads), the
        windows go through the prior in that many groups, a thread each, and code_step gets the same
        tables in the same order (window_groups.Stream). by_share: code_step codes any part of a
        step's windows on its own, in the file's order (sel False elsewhere), as the plain encoder's
        and decoder's do (not a generated file's draws, nor RDOQ's choices): the groups then do not
        meet at every code point, and with known(rows, sel, pos, subq), the symbols code_step will
        return for the chunk's windows `rows` (the encoder's true indices), do not wait for them.
        Returns the chunk's tokens (b, N, active), MASK outside the image."""
        def code(weights, sel, t, pos, subq):
            if not len(weights):  # no position of these windows inside the image here: nothing coded
                return np.zeros(0, dtype=np.int64)
            if draws is not None and t >= draws.sent:
                return draws(weights)
            return code_step(weights, pos, sel, subq)
        groups = window_groups.split(len(chunk_valid), self._threads(len(chunk_valid), budget))
        if len(groups) == 1:
            return self._code_windows(chunk_valid, active, schedule, code)
        int8_products()  # the kernel probe, timed once here rather than by two threads side by side
        own = None if known is None else lambda rows, weights, sel, t, pos, subq: known(rows, sel, pos, subq)
        return torch.cat(window_groups.run_groups(
            groups, lambda rows, exchange: self._code_windows(chunk_valid[rows], active, schedule, exchange), code,
            by_share, own))

    def _code_windows(self, valid: torch.Tensor, active: int, schedule: Schedule, code) -> torch.Tensor:
        """`_code_chunk` for windows `valid` (b, N) on this thread: code(weights, sel, t, pos, subq)
        -> symbols at each code point, as code_step's. -> tokens (b, N, active)."""
        prior, device = self.prior, valid.device
        b, N = valid.shape
        tokens = torch.zeros(b, N, active, dtype=torch.long, device=device)
        cache = prior.start_cache(b)
        pos = torch.from_numpy(schedule.positions(0)).to(device)
        f = prior.predict_features(cache, active, pos)                                    # (b, n, C)
        for t in range(schedule.steps):
            sel = valid[:, pos]                                                           # (b, n)
            f = inside(f, sel).reshape(-1, f.shape[-1])                                   # (m, C)
            if self.head is None:
                weights = prior.to_frequencies(prior.logits(f, slice(0, active)))       # (m, active, K)
                symbols = code(weights.reshape(-1, self.K).cpu().numpy(), sel, t, pos, slice(0, active))
            else:
                symbols = self._code_conditional(f, active, lambda w, j: code(w, sel, t, pos, slice(j, j + 1)))
            revealed = torch.full((*sel.shape, self.M), prior.ABSENT, dtype=torch.long, device=device)
            revealed[..., :active] = prior.MASK  # padding positions: never attended
            revealed[..., :active][sel] = torch.from_numpy(symbols).to(device).view(-1, active)
            tokens[:, pos] = revealed[..., :active]
            if t + 1 < schedule.steps:  # this step's content and the next step's queries in one pass
                next_pos = torch.from_numpy(schedule.positions(t + 1)).to(device)
                f = prior.reveal_and_predict(cache, revealed, pos, sel, active, next_pos)
                pos = next_pos
        return tokens

    def _code_conditional(self, f: torch.Tensor, active: int, code) -> np.ndarray:
        """One step's indices sub-quantizer by sub-quantizer: features f (m, C) of the positions
        revealed (IntegerPrior.predict_features); code(weights (m, K), j) codes sub-quantizer j's
        and returns them (m,). Each sub-quantizer's logits are made when it is coded. -> (m active,)
        the symbols, positions then sub-quantizers."""
        m, head, prior = len(f), self.head, self.prior
        symbols = np.zeros((m, active), dtype=np.int64)
        if m == 0:  # no position of these windows inside the image at this step: nothing to code,
            for j in range(active):  # but every code point is passed (other windows' threads meet there)
                code(np.zeros((0, self.K)), j)
            return symbols.reshape(-1)
        pre = head.features(f, active) if active > 1 else None
        lower = []                                                                    # (m,) indices each
        for j in range(active):
            lj = prior.logits(f, slice(j, j + 1))[:, 0]                                   # (m, K)
            if j:
                lj = lj.to(torch.float64).add_(head.term(pre, lower, j))
            symbols[:, j] = code(prior.to_frequencies(lj).cpu().numpy(), j)
            if j + 1 < active:
                lower.append(torch.from_numpy(symbols[:, j]).to(f.device))
        return symbols.reshape(-1)

    def compress(self, tokens: np.ndarray, steps: int, choose=None,
                 drawn: DrawnSteps | None = None) -> CompressedTokens:
        """tokens (active, h, w) -> CompressedTokens. Tokens holding UNUSED make a mapped file's
        payload (a level per window, `window_counts`), the level map first. choose: None codes
        `tokens` as they are; else an encoder-side hook (rdoq.Chooser) with arrays of its own laid
        out like the tokens, `choose.per_position` ((active, h, w, L) each), called at each step
        (with a conditional head: at each step and sub-quantizer) as choose(weights (m, K), symbols
        (m,), *picked): the tables and the symbols `tokens` holds there, and its arrays at those
        symbols ((m, L) each, in coding order; each chunk's windows are cut from them as it is
        coded, layout.windows_of); it returns the symbols to code instead (m,), which the decoder
        reads like any others: the format does not change. drawn: a generated file's header
        fields (bitstream.Generated): its steps from `sent` on are drawn (Draws), not coded; the
        tokens returned hold the draws there."""
        active, h, w = tokens.shape
        counts = self.window_counts(tokens) if (tokens < 0).any() else None
        if counts is not None and (choose is not None or drawn is not None):
            raise ValueError("a mapped file is neither generated nor coded with a choose hook")
        valid, schedule, chunks = self._layout(h, w, steps, active, counts)
        # (windows, N, active), int16 as the decoder's (K <= 2^15): a quarter of int64's memory at 24 MP
        truth = to_windows(torch.from_numpy(tokens.astype(np.int16)), self.window).to(valid.device)
        changes = choose is not None or drawn is not None
        coded = truth.clone() if changes else truth
        draws = Draws(drawn) if drawn is not None else None
        enc, window_bits = RangeEncoder(), np.zeros(len(valid))
        window_ids = torch.arange(len(valid))
        if counts is not None:
            level_map = np.array([self.levels.index(c) for c in counts], dtype=np.int64)
            enc.encode(level_map, map_weights(len(level_map), self._map_choices(active)))

        def known(chunk_truth, rows, sel, pos, subq):  # the true indices of the chunk's windows `rows` coded here
            return inside(chunk_truth[rows][:, pos][..., subq], sel).reshape(-1).cpu().numpy().astype(np.int64)

        def code_step(chunk, chunk_truth, count, chosen, weights, pos, sel, subq):
            symbols = known(chunk_truth, slice(None), sel, pos, subq)
            if choose is not None:
                at, inside_image = pos.cpu().numpy(), sel.cpu().numpy()
                picked = [inside(x[:, at][..., subq, :], inside_image).reshape(-1, x.shape[-1]) for x in chosen]
                symbols = np.ascontiguousarray(choose(weights, symbols, *picked), dtype=np.int64)
            enc.encode(symbols, weights)
            per_position = len(range(count)[subq])
            where = np.repeat(window_ids[chunk].numpy()[np.nonzero(sel.cpu().numpy())[0]], per_position)  # each symbol's window
            bits = PROB_BITS - np.log2(weights[np.arange(len(symbols)), symbols] + 1)
            window_bits[:] += np.bincount(where, weights=bits, minlength=len(window_bits))
            return symbols

        budget = torch.get_num_threads()
        with numerics_fence(), one_thread():
            for k, (count, chunk) in enumerate(chunks):
                chosen = None if choose is None else [windows_of(x, self.window, window_ids[chunk].tolist())
                                                      for x in choose.per_position]   # (b, N, active, L) each
                chunk_truth = truth[chunk]    # (b, N, active): a view, or a mapped file's copy made once
                out = self._code_chunk(valid[chunk], count, schedule,
                                       functools.partial(code_step, chunk, chunk_truth, count, chosen), draws, budget,
                                       not changes, None if changes else functools.partial(known, chunk_truth))
                if changes:
                    coded[chunk] = torch.where(valid[chunk][..., None], out, coded[chunk])
                if k + 1 < len(chunks):  # the check is over the tokens coded, which the decoder gets
                    check = chunk_check(coded[chunk][..., :count][valid[chunk]].cpu().numpy())
                    enc.encode(check, uniform_weights(CHUNK_CHECK_BYTES))
                    release_free_memory()  # the chunk's cache (67 MB for 32 windows), back to the system
        result = from_windows(coded.cpu(), h, w, self.window).numpy().astype(np.int64) if changes else tokens
        del truth, coded, chunk_truth   # (every image has a window: the loop ran)
        if len(chunks) > 1:  # the last chunk's cache too: rate control's next step allocates anew
            release_free_memory()
        return CompressedTokens(enc.payload(), float(window_bits.sum()), window_bits, result, counts is not None,
                                token_checksum(result))

    def decompress(self, payload: bytes, active: int, h: int, w: int, steps: int, checksum: int | None = None,
                   drawn: DrawnSteps | None = None, mapped: bool = False) -> np.ndarray:
        """The token grid (active, h, w) of a payload (and of a generated file's draws; a mapped
        file's: UNUSED beyond each window's count) whose token_checksum is `checksum` (None: not
        checked); CorruptFileError at the first inconsistency (a payload longer than its indices can
        take, one that cannot be a range-coder stream, a chunk check that differs, words left over,
        another checksum)."""
        num_windows = math.prod(window_grid(h, w, self.window))
        symbols = active * h * w + (num_windows if mapped else 0)  # + the level map's
        if len(payload) > max_payload_bytes(symbols):
            raise CorruptFileError(f"payload of {len(payload)} bytes is longer than {symbols} symbols can take "
                                   f"({max_payload_bytes(symbols)} bytes; file damaged)")
        dec = RangeDecoder(payload)
        counts = None
        if mapped:
            choices = self._map_choices(active)
            if choices < 2:
                raise CorruptFileError(f"a mapped file's count ({active}) must be above the lowest level")
            counts = np.array(self.levels)[dec.decode(map_weights(num_windows, choices))]
            if len(set(counts.tolist())) < 2:  # the encoder writes one level as a plain file
                raise CorruptFileError("the level map has one level (file damaged or forged)")
        valid, schedule, chunks = self._layout(h, w, steps, active, counts)
        draws = Draws(drawn) if drawn is not None else None
        windows = torch.full((*valid.shape, active), UNUSED, dtype=torch.int16)  # K <= 2^15; 16 MB at the size limit
        budget = torch.get_num_threads()
        with numerics_fence(), one_thread():
            for k, (count, chunk) in enumerate(chunks):
                tokens = self._code_chunk(valid[chunk], count, schedule, lambda weights, *_: dec.decode(weights), draws,
                                          budget, by_share=draws is None).cpu()
                windows[chunk, :, :count] = tokens.to(torch.int16)
                if k + 1 < len(chunks):
                    expected = chunk_check(tokens[valid[chunk].cpu()].numpy())
                    if not np.array_equal(dec.decode(uniform_weights(CHUNK_CHECK_BYTES)), expected):
                        raise CorruptFileError(f"payload does not decode (the check after window chunk {k + 1} "
                                               f"of {len(chunks)} differs: file damaged or forged)")
                    release_free_memory()
        left_over = dec.left_over()
        if left_over is None:
            raise CorruptFileError("the file is truncated or damaged (its payload does not end as the encoder ends it)")
        if left_over:
            raise CorruptFileError(f"{counted(left_over, 'byte')} after the end of the file (data appended to it?)")
        tokens = from_windows(windows, h, w, self.window).numpy().astype(np.int64)
        del windows
        if len(chunks) > 1:
            release_free_memory()
        if checksum is not None and token_checksum(tokens) != checksum:
            raise CorruptFileError("token checksum mismatch: the file is damaged or truncated")
        return tokens
