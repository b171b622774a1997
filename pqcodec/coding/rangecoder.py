"""A range coder in pure Python + numpy that writes exactly the words constriction 0.5.0 writes.

pqcodec codes its symbols with `constriction.stream.queue.RangeEncoder` / `RangeDecoder` and the model
family `constriction.stream.model.Categorical(perfect=False)`. constriction ships no wheels for some
platforms (Linux ARM64, musl), so this module re-implements the same algorithm, so that a file
written by either coder decodes with the other. It was written from a reading of constriction's
source (stream/queue.rs, stream/model/categorical/lazy_contiguous.rs, pybindings/stream/...); no
code was copied. entropy.py picks this coder when constriction cannot be imported.

The coder, for a newcomer
-------------------------
*Words and state.* The compressed data is a sequence of 32-bit words. The coder's state is two
64-bit integers: `lower`, the start of the current interval, and `range`, its width (the interval
is [lower, lower + range), arithmetic modulo 2^64). A fresh coder has lower = 0 and
range = 2^64 - 1.

*Models.* Every table has PRECISION = 24 bits: symbol i of a row owns the integer interval
[left_cdf[i], left_cdf[i] + probability[i]) of [0, 2^24). constriction's Categorical(perfect=False)
derives these from float probabilities p (one row of K >= 2 values) as
    scale       = (2^24 - K) / sum(p)                     (float arithmetic, sequential sum)
    left_cdf[i] = trunc(sum(p[:i]) * scale) + i
    right[i]    = trunc(sum(p[:i+1]) * scale) + i + 1     for i < K - 1, and right[K-1] = 2^24
    probability = right[i] - left_cdf[i]
so every symbol gets at least frequency 1 ("leaky"). pqcodec hands it integer weights w summing to
exactly 2^24 - K, so scale = 1, the float sums are exact, and symbol i gets left_cdf = sum(w[:i]) + i
and probability w[i] + 1. We follow the float formula exactly (numpy's cumsum adds sequentially, as
Rust's `sum` does), so other float64 / float32 tables give constriction's integers too.

*Order.* The coder is a queue (first in, first out): `encode(symbols, weights)` codes symbols[0]
with weights[0], then symbols[1] with weights[1], ..., and successive calls append; the decoder
returns them in the same order, one call per encode call with the same tables.

*Encoding one symbol* narrows the interval to the symbol's share:
    scale = range >> 24;  lower += scale * left_cdf;  range = scale * probability
*Renormalisation.* When range drops below 2^32, the top word of `lower` is settled except for a
possible carry: it is shifted out (lower <<= 32, range <<= 32, both modulo 2^64) and written (or
held back, next paragraph).
*Carries ("situations").* The interval may straddle a multiple of 2^64 after the shift (lower +
range wraps around): then the word just shifted out may still be incremented by a later carry.
constriction then holds it back ("inverted situation": the first held word, and a count of further
held words, which can only end up as all 0xFFFFFFFF without a carry, or all 0 with one). As soon as
an encoded symbol leaves an interval that no longer wraps, the held words are written: the first
word +1 followed by zeros if lower wrapped past 2^64 (a carry), else the first word followed by
0xFFFFFFFF words.

*Sealing* (`get_compressed`): nothing if no symbol was ever encoded (an empty stream is zero words).
Otherwise the held words (if any) are written as above for the point lower + 2^32 - 1, then that
point's top word; and when the top word of lower + range equals it, one more 0 word, so that the
point identifies the interval whatever words follow. Sealing does not change the coder: it can go
on encoding, and get_compressed can be called again.

*Decoding* mirrors this with a third 64-bit integer, `point`, the first two words (one word w reads
as w << 32, none as 0). For each symbol: quantile = ((point - lower) mod 2^64) // (range >> 24); a
quantile >= 2^24 cannot come from the encoder and raises ValueError (constriction raises
AssertionError there). The symbol is the one whose [left_cdf, right) holds the quantile; lower and
range are updated as in the encoder, and on renormalisation point is shifted too and takes the next
word (a 0 past the end: reading past the end is not an error, as in constriction).
`maybe_exhausted()` is True when every word was read and either nothing was decoded or
(point - lower) mod 2^64 < 2^33 - 1. Everything the decoder computes depends on point and lower only
through their difference, so RangeDecoder keeps just offset = (point - lower) mod 2^64.

*Speed.* The per-call work that can be vectorised is: numpy turns a call's (n, K) weights into
integer cumulative tables at once (cumulative_tables), and the encoder gathers each symbol's
(left_cdf, probability) with one fancy index. What remains is a tight loop over Python ints per
symbol; the decoder finds each symbol with bisect on a memoryview of the flat table (no list made).
On the project's 2-core machine that is about 1.5 us a symbol to encode and 2 us to decode
(constriction: 0.3 and 0.45 us), +0.05 s and +0.07 s for a Kodak image's 48,000 symbols;
`python -c "from pqcodec.coding import rangecoder; rangecoder.benchmark()"` measures both.

Divergences from constriction, none of them on a valid stream:
- errors: ValueError everywhere (constriction: AssertionError for undecodable words, KeyError for a
  symbol outside 0..K-1, ValueError for a table it cannot normalise);
- the encoder checks a whole call before coding any of it (constriction codes the symbols before an
  impossible one, then raises: its encoder is left changed, ours is not);
- negative or NaN weights raise ValueError (constriction does not check them);
- a float32 table whose last weight is 0 can round the last symbol to frequency 0: encoding it raises
  ValueError (constriction panics).
"""
from bisect import bisect_right

import numpy as np

PRECISION = 24                          # bits of every frequency table (constriction's default)
WORD_BITS = 32
STATE_MASK = (1 << 64) - 1              # the state is 64-bit: arithmetic modulo 2^64
WORD_MASK = (1 << WORD_BITS) - 1
RENORMALISE_BELOW = 1 << (64 - WORD_BITS)   # range must stay >= 2^32
TABLE_TOTAL = 1 << PRECISION
MAYBE_EXHAUSTED_GAP = (1 << 33) - 1     # constriction's bound on point - lower at a stream's end


def cumulative_tables(weights) -> np.ndarray:
    """The integer tables constriction's Categorical(perfect=False) makes of float weights (n, K):
    (n, K + 1) int64 cdf with cdf[j, i] = left_cdf of symbol i in row j, cdf[j, 0] = 0 and
    cdf[j, K] = 2^24; symbol i owns [cdf[j, i], cdf[j, i + 1]). Raises ValueError where constriction
    refuses the table (K < 2, a row summing to 0, infinity or NaN), and for negative or NaN weights."""
    weights = np.asarray(weights)
    if weights.dtype != np.float32 and weights.dtype != np.float64:
        weights = weights.astype(np.float64)      # constriction computes in the array's float type
    if weights.ndim != 2:
        raise ValueError(f"weights must be a 2-D array (symbols, K), got shape {weights.shape}")
    n, K = weights.shape
    if K < 2 or K >= TABLE_TOTAL - 1:
        raise ValueError(f"a categorical table needs 2 <= K < 2^24 - 1 symbols, got K = {K}")
    cdf = np.empty((n, K + 1), dtype=np.int64)
    cdf[:, 0] = 0
    if n == 0:
        return cdf
    # pqcodec's tables: integer weights >= 0 summing to exactly 2^24 - K in every row. Then every float
    # partial sum is an exact integer (below 2^24), constriction's scale is exactly 1, and integer
    # cumulative sums give the same numbers, twice as fast as float ones.
    with np.errstate(invalid="ignore"):
        integers = weights.astype(np.int64)
    if np.array_equal(integers, weights) and integers.min() >= 0:
        right = cdf[:, 1:]
        np.cumsum(integers, axis=1, out=right)
        if np.all(right[:, -1] == TABLE_TOTAL - K):
            right += np.arange(1, K + 1, dtype=np.int64)   # + i + 1: every symbol's frequency >= 1
            return cdf
    return _cumulative_tables_float(weights, cdf)


def _cumulative_tables_float(weights: np.ndarray, cdf: np.ndarray) -> np.ndarray:
    """cumulative_tables for any float table, with constriction's float arithmetic step by step."""
    K = weights.shape[1]
    cumulative = np.cumsum(weights, axis=1)      # sequential sums, as Rust's iterator sum
    totals = cumulative[:, -1]
    if not (weights.min() >= 0) or not np.all(np.isfinite(totals)) \
            or not np.all(totals >= np.finfo(weights.dtype).tiny):
        raise ValueError("probability table not normalizable (negative, NaN or infinite weights, "
                         "or a row summing to zero)")
    scale = weights.dtype.type(TABLE_TOTAL - K) / totals
    if np.any(scale != 1):                       # x * 1.0 == x exactly: the pass can be skipped
        cumulative = cumulative * scale[:, None].astype(weights.dtype)
    right = cdf[:, 1:]
    right[:] = cumulative                        # truncation toward zero, as Rust's `as u32`
    right += np.arange(1, K + 1, dtype=np.int64)
    # The last symbol ends at 2^24 whatever the rounding. In float32 the rounding can push the end of
    # the one before to 2^24 if the last weight is 0: then the last symbol has no room (encode refuses
    # it; constriction panics or codes garbage) and the decoder never reaches it (as constriction's).
    right[:, -1] = TABLE_TOTAL
    return cdf


class RangeEncoder:
    """constriction.stream.queue.RangeEncoder with Categorical(perfect=False) tables, in Python."""

    def __init__(self):
        self._words: list[int] = []     # words already settled
        self._lower = 0
        self._range = STATE_MASK
        self._held_count = 0            # > 0: "inverted situation", this many words held back
        self._first_held_word = 0

    def encode(self, symbols, weights):
        """Appends symbols (n,) ints in [0, K), each coded with its row of weights (n, K) (float
        probabilities, as for Categorical(perfect=False)), first symbol first."""
        symbols = np.asarray(symbols)
        cdf = cumulative_tables(weights)
        n, K = cdf.shape[0], cdf.shape[1] - 1
        if symbols.ndim != 1 or len(symbols) != n:
            raise ValueError(f"`symbols` argument has wrong length ({symbols.shape} for {n} tables)")
        if n == 0:
            return
        if not np.issubdtype(symbols.dtype, np.integer):
            raise TypeError(f"symbols must be integers, got {symbols.dtype}")
        if symbols.min() < 0 or symbols.max() >= K:
            raise ValueError("Tried to encode symbol that has zero probability under the used entropy model "
                             f"(a symbol outside 0..{K - 1}).")
        flat = cdf.reshape(-1)
        at = np.arange(n, dtype=np.int64) * (K + 1) + symbols.astype(np.int64)
        starts = flat[at]
        probabilities = flat[at + 1] - starts
        if probabilities.min() <= 0:     # only a float32 table's last symbol (see cumulative_tables)
            raise ValueError("Tried to encode symbol that has zero probability under the used entropy model.")
        self._encode_intervals(starts.tolist(), probabilities.tolist())

    def _encode_intervals(self, starts: list, probabilities: list):
        """The sequential part: one state update per symbol, on Python ints."""
        words = self._words
        lower, range_, held_count, first_held = self._lower, self._range, self._held_count, self._first_held_word
        for start, probability in zip(starts, probabilities):
            scale = range_ >> PRECISION
            range_ = scale * probability
            new_lower = (lower + scale * start) & STATE_MASK
            if held_count and new_lower + range_ <= STATE_MASK:
                # the interval no longer wraps around 2^64: the held words are settled
                if new_lower < lower:       # lower wrapped: a carry into the held words
                    words.append(first_held + 1)
                    words.extend([0] * (held_count - 1))
                else:
                    words.append(first_held)
                    words.extend([WORD_MASK] * (held_count - 1))
                held_count = 0
            lower = new_lower
            if range_ < RENORMALISE_BELOW:
                top_word = lower >> (64 - WORD_BITS)
                lower = (lower << WORD_BITS) & STATE_MASK
                range_ <<= WORD_BITS
                if held_count:
                    held_count += 1          # still wrapping: one more word waits for the carry
                elif lower + range_ <= STATE_MASK:
                    words.append(top_word)   # the common case
                else:
                    held_count, first_held = 1, top_word   # the interval now wraps: hold this word
        self._lower, self._range, self._held_count, self._first_held_word = lower, range_, held_count, first_held

    def _seal_words(self) -> list:
        """The words get_compressed appends after the settled ones (the coder is left unchanged)."""
        if self._range == STATE_MASK:       # nothing encoded yet: the empty stream
            return []
        seal = []
        point = (self._lower + (1 << (64 - WORD_BITS)) - 1) & STATE_MASK
        if self._held_count:
            if point < self._lower:
                seal += [self._first_held_word + 1] + [0] * (self._held_count - 1)
            else:
                seal += [self._first_held_word] + [WORD_MASK] * (self._held_count - 1)
        point_word = point >> (64 - WORD_BITS)
        seal.append(point_word)
        upper_word = ((self._lower + self._range) & STATE_MASK) >> (64 - WORD_BITS)
        if upper_word == point_word:
            seal.append(0)
        return seal

    def get_compressed(self) -> np.ndarray:
        """The sealed stream as uint32 words; the encoder may go on encoding afterwards."""
        return np.array(self._words + self._seal_words(), dtype=np.uint32)

    def num_words(self) -> int:
        return len(self._words) + len(self._seal_words())


class RangeDecoder:
    """constriction.stream.queue.RangeDecoder with Categorical(perfect=False) tables, in Python.

    The decoder's outputs depend on `point` and `lower` only through their difference, so it keeps
    offset = (point - lower) mod 2^64 instead of both."""

    def __init__(self, words):
        words = np.asarray(words)
        if words.ndim != 1:
            raise ValueError(f"compressed data must be a 1-D array of uint32 words, got shape {words.shape}")
        if len(words) and words.dtype != np.uint32:
            if not np.issubdtype(words.dtype, np.integer) or words.min() < 0 or words.max() > WORD_MASK:
                raise ValueError("compressed data must be uint32 words")
        self._words = words.astype(np.uint64).tolist()
        first_two = self._words[:2] + [0, 0][len(self._words):]   # missing words read as zeros
        self._offset = (first_two[0] << WORD_BITS) | first_two[1]
        self._position = len(self._words[:2])
        self._range = STATE_MASK

    def decode(self, weights) -> np.ndarray:
        """One symbol per row of weights (n, K), in order: int64 array (n,). Raises ValueError where
        the words cannot be a valid encoding under these tables."""
        cdf = cumulative_tables(weights)
        n, K = cdf.shape[0], cdf.shape[1] - 1
        table = memoryview(cdf.reshape(-1))      # flat; row j is table[j*(K+1) : (j+1)*(K+1)]
        words, position, n_words = self._words, self._position, len(self._words)
        offset, range_ = self._offset, self._range
        decoded = [0] * n
        row = 0
        try:
            for j in range(n):
                scale = range_ >> PRECISION
                quantile = offset // scale
                if quantile >= TABLE_TOTAL:
                    raise ValueError("Tried to decode from compressed data that is invalid for the employed "
                                     "entropy model.")
                # the first symbol i whose interval ends past the quantile (cdf[i + 1] > quantile)
                index = bisect_right(table, quantile, row + 1, row + K)
                start = table[index - 1]
                decoded[j] = index - 1 - row
                offset -= scale * start          # never negative: offset >= quantile * scale
                range_ = scale * (table[index] - start)
                row += K + 1
                if range_ < RENORMALISE_BELOW:
                    range_ <<= WORD_BITS
                    offset = (offset << WORD_BITS) & STATE_MASK
                    if position < n_words:      # past the end, the words read as zeros
                        offset |= words[position]
                        position += 1
        finally:
            # symbols decoded before an error stay consumed, as in constriction
            self._offset, self._range, self._position = offset, range_, position
        return np.array(decoded, dtype=np.int64)

    def maybe_exhausted(self) -> bool:
        """True if all data may have been decoded (every word read, and the state at a stream's end)."""
        return self._position >= len(self._words) and (
            self._range == STATE_MASK or self._offset < MAYBE_EXHAUSTED_GAP)


def benchmark(symbols: int = 48_000, per_call: int = 600, K: int = 256, seed: int = 0):
    """Times this coder against constriction (if installed) on a Kodak-sized job: `symbols` symbols
    in calls of `per_call`, with skewed integer tables like the prior's (about 4.5 bits a symbol).
    Run: python -c "from pqcodec.coding import rangecoder; rangecoder.benchmark()" """
    import time
    rng = np.random.default_rng(seed)
    calls = []
    for _ in range(symbols // per_call):
        logits = rng.normal(size=(per_call, K)) * 2.5
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        w = np.floor(p * (TABLE_TOTAL - K))
        w[np.arange(per_call), w.argmax(1)] += (TABLE_TOTAL - K) - w.sum(1)
        calls.append(((p.cumsum(1) > rng.random((per_call, 1))).argmax(1), w))
    coders = {"python": (RangeEncoder, RangeDecoder, lambda coder, s, w: coder.encode(s, w),
                         lambda coder, w: coder.decode(w))}
    try:
        import constriction
        family = constriction.stream.model.Categorical(perfect=False)
        coders["constriction"] = (constriction.stream.queue.RangeEncoder, constriction.stream.queue.RangeDecoder,
                                  lambda coder, s, w: coder.encode(s.astype(np.int32), family, w),
                                  lambda coder, w: coder.decode(family, w))
    except ImportError:
        pass
    print(f"{len(calls) * per_call} symbols, K = {K}, calls of {per_call}: best of 3")
    results = {}
    for name, (make_encoder, make_decoder, encode, decode) in coders.items():
        best_encode = best_decode = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            encoder = make_encoder()
            for s, w in calls:
                encode(encoder, s, w)
            words = encoder.get_compressed()
            best_encode = min(best_encode, time.perf_counter() - started)
            started = time.perf_counter()
            decoder = make_decoder(words)
            decoded = [decode(decoder, w) for _, w in calls]
            best_decode = min(best_decode, time.perf_counter() - started)
            assert all(np.array_equal(d, s) for d, (s, _) in zip(decoded, calls))
        results[name] = words
        print(f"  {name:12s} encode {best_encode:.3f} s   decode {best_decode:.3f} s   ({len(words)} words)")
    if len(results) == 2:
        print("  same words:", np.array_equal(results["python"], results["constriction"]))
