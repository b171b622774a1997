"""pqcodec.coding.rangecoder, the pure Python range coder, against constriction 0.5.0: the same words for
every stream (empty calls, K = 2 .. 1024, extreme and uniform tables, carries, seals of every kind),
the same symbols, errors and maybe_exhausted() on damaged or arbitrary words; and entropy.py's choice
of backend. Tests that need constriction skip without it; the round trips of our coder run anyway."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from pqcodec.coding import entropy, rangecoder
from pqcodec.errors import CorruptFileError, PQCodecError

TOTAL = 1 << 24


def _constriction():
    return pytest.importorskip("constriction")


# ---- tables and streams ----------------------------------------------------------------------------

def skewed_weights(rng, n: int, K: int, sharpness: float) -> np.ndarray:
    """n integer rows summing to 2^24 - K, as pqcodec's prior makes them (softmax of random logits)."""
    logits = rng.normal(size=(n, K)) * sharpness
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    w = np.floor(p * (TOTAL - K))
    w[np.arange(n), w.argmax(1)] += (TOTAL - K) - w.sum(1)
    return w


def extreme_weights(rng, n: int, K: int) -> np.ndarray:
    """One symbol per row holds all the weight (2^24 - K); the others have frequency 1."""
    w = np.zeros((n, K))
    w[np.arange(n), rng.integers(0, K, n)] = TOTAL - K
    return w


def uniform_weights(n: int, K: int) -> np.ndarray:
    w = np.full((n, K), float((TOTAL - K) // K))
    w[:, 0] += (TOTAL - K) - w.sum(1)
    return w


def random_call(rng, K=None):
    """(symbols, weights) of one coding call: any size (also 0), table kind and symbol choice."""
    K = K or int(rng.choice([2, 3, 256, 1024]))
    n = int(rng.choice([0, 1, 2, int(rng.integers(3, 60))]))
    kind = rng.integers(0, 4)
    if kind == 0:
        w = extreme_weights(rng, n, K)
    elif kind == 1:
        w = uniform_weights(n, K)
    else:
        w = skewed_weights(rng, n, K, float(rng.choice([0.3, 3.0, 12.0])))
    pick = rng.integers(0, 3)
    if pick == 0:      # the least likely symbol of each row: range shrinks fast, carries are frequent
        s = w.argmin(1) if n else np.zeros(0, np.int64)
    elif pick == 1:    # any symbol
        s = rng.integers(0, K, n)
    else:              # drawn from the table itself
        s = np.array([rng.choice(K, p=(row + 1) / TOTAL) for row in w], dtype=np.int64)
    return s.astype(np.int64), w


def random_stream(rng, calls=None):
    return [random_call(rng) for _ in range(calls if calls is not None else int(rng.integers(0, 6)))]


def our_words(stream) -> np.ndarray:
    enc = rangecoder.RangeEncoder()
    for symbols, weights in stream:
        enc.encode(symbols, weights)
    return enc.get_compressed()


def their_words(stream) -> np.ndarray:
    constriction = _constriction()
    family = constriction.stream.model.Categorical(perfect=False)
    enc = constriction.stream.queue.RangeEncoder()
    for symbols, weights in stream:
        if len(symbols):   # entropy.py never hands constriction an empty call
            enc.encode(symbols.astype(np.int32), family, weights)
    return enc.get_compressed()


def decode_both(words, tables):
    """Decodes `words` with the tables in turn with both decoders; asserts they agree call by call
    (symbols, maybe_exhausted, or an error at the same call) and returns our decoded calls."""
    constriction = _constriction()
    family = constriction.stream.model.Categorical(perfect=False)
    ours = rangecoder.RangeDecoder(words)
    theirs = constriction.stream.queue.RangeDecoder(np.asarray(words, dtype=np.uint32))
    assert ours.maybe_exhausted() == theirs.maybe_exhausted()
    decoded = []
    for weights in tables:
        if not len(weights):
            continue
        try:
            expected = theirs.decode(family, weights)
        except AssertionError:   # constriction: "Tried to decode from compressed data that is invalid"
            with pytest.raises(ValueError, match="invalid"):
                ours.decode(weights)
            return decoded
        got = ours.decode(weights)
        assert got.dtype == np.int64
        assert np.array_equal(got, expected)
        assert ours.maybe_exhausted() == theirs.maybe_exhausted()
        decoded.append(got)
    return decoded


# ---- our coder alone -------------------------------------------------------------------------------

def test_round_trips_without_constriction():
    rng = np.random.default_rng(1)
    for _ in range(60):
        stream = random_stream(rng)
        dec = rangecoder.RangeDecoder(our_words(stream))
        for symbols, weights in stream:
            assert np.array_equal(dec.decode(weights), symbols)
        assert dec.maybe_exhausted()


def test_the_empty_stream_is_no_words_and_decodes_as_zeros():
    enc = rangecoder.RangeEncoder()
    enc.encode(np.zeros(0, np.int64), np.zeros((0, 256)))
    assert enc.get_compressed().dtype == np.uint32 and len(enc.get_compressed()) == 0
    dec = rangecoder.RangeDecoder(np.zeros(0, np.uint32))
    assert dec.maybe_exhausted()
    assert np.array_equal(dec.decode(uniform_weights(3, 4)), [0, 0, 0])


def test_get_compressed_does_not_seal_the_encoder():
    rng = np.random.default_rng(2)
    first, second = random_call(rng, 256), random_call(rng, 256)
    enc = rangecoder.RangeEncoder()
    enc.encode(*first)
    enc.get_compressed()
    enc.encode(*second)
    assert np.array_equal(enc.get_compressed(), our_words([first, second]))
    assert enc.num_words() == len(enc.get_compressed())


def test_pqcodec_tables_give_weight_plus_one():
    """Integer weights summing to 2^24 - K: symbol i gets left_cdf = sum(w[:i]) + i, frequency w[i] + 1."""
    rng = np.random.default_rng(3)
    w = skewed_weights(rng, 5, 256, 4.0)
    cdf = rangecoder.cumulative_tables(w)
    assert np.array_equal(cdf[:, :-1], np.cumsum(w, 1) - w + np.arange(256))
    assert np.array_equal(np.diff(cdf, axis=1), w + 1)
    assert np.all(cdf[:, -1] == TOTAL)


def test_bad_calls_raise_value_errors():
    enc = rangecoder.RangeEncoder()
    w = uniform_weights(2, 4)
    for symbols in ([0, 4], [-1, 0]):
        with pytest.raises(ValueError, match="zero probability"):
            enc.encode(np.array(symbols), w)
    assert len(enc.get_compressed()) == 0          # nothing of a refused call is coded
    with pytest.raises(ValueError, match="wrong length"):
        enc.encode(np.array([0]), w)
    with pytest.raises(ValueError, match="2 <= K"):
        enc.encode(np.array([0]), np.full((1, 1), TOTAL - 1.0))
    for bad in (np.nan, -1.0, np.inf):
        w_bad = uniform_weights(1, 4)
        w_bad[0, 1] = bad
        with pytest.raises(ValueError, match="normalizable"):
            enc.encode(np.array([0]), w_bad)
    with pytest.raises(ValueError, match="normalizable"):
        enc.encode(np.array([0]), np.zeros((1, 4)))


def test_arbitrary_words_never_hang_and_raise_only_value_errors():
    rng = np.random.default_rng(4)
    tables = [skewed_weights(rng, 200, 256, 3.0), extreme_weights(rng, 200, 2)]
    for length in (0, 1, 2, 3, 50):
        for _ in range(20):
            dec = rangecoder.RangeDecoder(rng.integers(0, 1 << 32, length, dtype=np.uint64).astype(np.uint32))
            try:
                for w in tables:
                    assert len(dec.decode(w)) == len(w)
            except ValueError:
                pass


# ---- against constriction --------------------------------------------------------------------------

def test_the_same_words_as_constriction_for_random_streams():
    rng = np.random.default_rng(5)
    for _ in range(150):
        stream = random_stream(rng)
        words = our_words(stream)
        assert np.array_equal(words, their_words(stream))
        decoded = decode_both(words, [w for _, w in stream])
        assert all(np.array_equal(d, s) for d, (s, _) in zip(decoded, [c for c in stream if len(c[0])]))


@pytest.mark.parametrize("K", [2, 256, 1024])
def test_the_least_likely_symbol_many_times(K):
    """Frequency 1 of 2^24 again and again: a renormalisation each symbol, carries and held words."""
    rng = np.random.default_rng(K)
    w = extreme_weights(rng, 400, K)
    rare = (w.argmax(1) + 1 + rng.integers(0, K - 1, len(w))) % K
    stream = [(rare[:150], w[:150]), (w.argmax(1)[150:200], w[150:200]), (rare[200:], w[200:])]
    words = our_words(stream)
    assert np.array_equal(words, their_words(stream))
    decode_both(words, [w for _, w in stream])


def test_single_symbol_streams():
    """One symbol: streams of one or two words (an extra 0 word when the point alone is ambiguous)."""
    rng = np.random.default_rng(6)
    lengths = set()
    for K in (2, 3, 256):
        for table in (uniform_weights(1, K), extreme_weights(rng, 1, K), skewed_weights(rng, 1, K, 5.0)):
            for s in range(min(K, 12)):
                stream = [(np.array([s]), table)]
                words = our_words(stream)
                assert np.array_equal(words, their_words(stream))
                decode_both(words, [table])
                lengths.add(len(words))
    assert lengths == {1}


def adversarial_stream(rng, steps: int):
    """A stream steered by the encoder's own state into the rare paths: a range just above 2^32 (a
    seal with an extra 0 word), an interval straddling a word boundary (held words), then a symbol
    that moves lower into the last 2^32 below 2^64 (a seal whose point wraps: a carry at sealing)."""
    enc, stream, seen = rangecoder.RangeEncoder(), [], set()
    for _ in range(steps):
        scale, lower, range_ = enc._range >> 24, enc._lower, enc._range
        move = rng.integers(0, 5)
        boundary = ((lower >> 32) + 1) << 32
        if move == 0:     # tight: range becomes just >= 2^32
            p = min(-(-(1 << 32) // scale), TOTAL - 1)
            symbol, table = 0, [p - 1, TOTAL - 2 - (p - 1)]
        elif move == 1 and not enc._held_count and boundary - lower < range_ \
                and 1 <= (boundary - lower - 1) // scale < TOTAL - 3:   # straddle a word boundary
            start = (boundary - lower - 1) // scale
            symbol, table = 1, [start - 1, 1, TOTAL - 3 - start]
        elif move == 2 and enc._held_count and 1 <= ((1 << 32) - 1 - (lower >> 32)) * TOTAL // (range_ >> 32) + 1 < TOTAL - 1:
            start = ((1 << 32) - 1 - (lower >> 32)) * TOTAL // (range_ >> 32) + 1
            symbol, table = 1, [start - 1, TOTAL - 2 - (start - 1)]
        elif move == 3:   # the rare last or first symbol
            symbol, table = int(rng.integers(0, 2)), [TOTAL - 2, 0]
        else:
            a = int(rng.integers(0, TOTAL - 1))
            symbol, table = int(rng.integers(0, 2)), [a, TOTAL - 2 - a]
        call = (np.array([symbol]), np.array([table], dtype=np.float64))
        stream.append(call)
        held_before, first_held_before, words_before = enc._held_count, enc._first_held_word, len(enc._words)
        enc.encode(*call)
        if held_before and len(enc._words) > words_before:      # the held words were written
            seen.add("release, carry" if enc._words[words_before] == first_held_before + 1 else "release")
        point = (enc._lower + (1 << 32) - 1) & rangecoder.STATE_MASK
        if enc._held_count:
            seen.add("seal held, point wraps" if point < enc._lower else "seal held")
        if ((enc._lower + enc._range) & rangecoder.STATE_MASK) >> 32 == point >> 32:
            seen.add("seal extra 0")
    return stream, seen


def test_carries_and_every_kind_of_seal_match_constriction():
    rng = np.random.default_rng(7)
    seen_all = set()
    for _ in range(40):
        stream, seen = adversarial_stream(rng, int(rng.integers(1, 30)))
        seen_all |= seen
        # seal after every prefix: every state the encoder passed through is sealed once
        for cut in range(1, len(stream) + 1, 3):
            prefix = stream[:cut]
            words = our_words(prefix)
            assert np.array_equal(words, their_words(prefix))
        decode_both(our_words(stream), [w for _, w in stream])
    assert seen_all == {"seal held", "seal held, point wraps", "seal extra 0", "release", "release, carry"}


def test_streams_of_0_1_2_and_more_words_decode_alike():
    """Any words, also ones no encoder writes: the same symbols, errors and maybe_exhausted()."""
    rng = np.random.default_rng(8)
    tables = [skewed_weights(rng, 3, 256, 3.0), uniform_weights(2, 2), extreme_weights(rng, 40, 1024)]
    special = [0, 1, 0x7FFFFFFF, 0xFF000000, 0xFFFFFFFE, 0xFFFFFFFF]
    for length in (0, 1, 2, 3, 5):
        for _ in range(25):
            words = rng.choice(special + list(rng.integers(0, 1 << 32, 6)), length).astype(np.uint32)
            decode_both(words, tables)


def test_damaged_payloads_decode_as_constriction_does():
    """Truncated, bit-flipped and extended payloads: constriction either decodes some symbols (ours the
    same ones, maybe_exhausted() the same) or raises AssertionError where ours raises ValueError."""
    rng = np.random.default_rng(9)
    outcomes = set()
    for _ in range(25):
        stream = random_stream(rng, calls=int(rng.integers(1, 4)))
        tables = [w for _, w in stream]
        words = our_words(stream)
        damaged = [words[:-1], words[: len(words) // 2], np.concatenate([words, [0]]),
                   np.concatenate([words, rng.integers(0, 1 << 32, 3, dtype=np.uint64).astype(np.uint32)])]
        for _ in range(4):
            flipped = words.copy()
            if len(flipped):
                flipped[rng.integers(0, len(flipped))] ^= np.uint32(1 << int(rng.integers(0, 32)))
            damaged.append(flipped)
        for d in damaged:
            decoded = decode_both(d.astype(np.uint32), tables)
            outcomes.add("raised" if len(decoded) < sum(1 for w in tables if len(w)) else "decoded")
    assert outcomes == {"raised", "decoded"}   # both kinds of outcome were compared


def test_invalid_first_words_raise_in_both():
    """0xFFFFFFFF 0xFF...: a quantile >= 2^24 on the first symbol, which no encoder can write."""
    decode_both(np.array([0xFFFFFFFF, 0xFFFFFFFF], np.uint32), [uniform_weights(1, 4)])
    with pytest.raises(ValueError, match="invalid"):
        rangecoder.RangeDecoder(np.array([0xFFFFFFFF, 0xFFFFFFFF], np.uint32)).decode(uniform_weights(1, 4))


def test_float_tables_quantize_as_constriction_does():
    """Tables that are not pqcodec's (non-integer float64 and float32 probabilities, any sum) take
    constriction's float arithmetic: the same words."""
    rng = np.random.default_rng(10)
    for dtype in (np.float64, np.float32):
        for _ in range(20):
            K, n = int(rng.choice([2, 5, 256])), int(rng.integers(1, 40))
            p = (rng.random((n, K)) ** 4 * rng.choice([1e-3, 1.0, 1e6])).astype(dtype)
            p[rng.random((n, K)) < 0.1] = 0
            p[:, 0] += dtype(1e-3)
            frequencies = np.diff(rangecoder.cumulative_tables(p), axis=1)
            symbols = rng.integers(0, K, n)
            # float32 rounding can leave a last symbol of weight 0 no room (constriction panics on it)
            empty = frequencies[np.arange(n), symbols] <= 0
            if empty.any():
                assert dtype == np.float32 and np.all(symbols[empty] == K - 1)
                with pytest.raises(ValueError, match="zero probability"):
                    rangecoder.RangeEncoder().encode(symbols, p)
                symbols[empty] = 0
            stream = [(symbols, p)]
            words = our_words(stream)
            assert np.array_equal(words, their_words(stream))
            decode_both(words, [p])


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_hypothesis_streams_match_constriction(data):
    """Small alphabets, any integer tables (one row's frequencies drawn whole), any symbols."""
    _constriction()
    stream = []
    for _ in range(data.draw(st.integers(0, 4))):
        K = data.draw(st.sampled_from([2, 3, 5, 16]))
        n = data.draw(st.integers(0, 8))
        raw = np.array(data.draw(st.lists(st.integers(0, 1 << 20), min_size=n * K, max_size=n * K)),
                       dtype=np.float64).reshape(n, K)
        raw[:, 0] += 1
        w = np.floor(raw / raw.sum(1, keepdims=True) * (TOTAL - K))
        w[np.arange(n), w.argmax(1)] += (TOTAL - K) - w.sum(1)
        symbols = np.array(data.draw(st.lists(st.integers(0, K - 1), min_size=n, max_size=n)), dtype=np.int64)
        stream.append((symbols, w))
    words = our_words(stream)
    assert np.array_equal(words, their_words(stream))
    decode_both(words, [w for _, w in stream])


# ---- entropy.py's backends -------------------------------------------------------------------------

def test_the_environment_variable_picks_the_backend(monkeypatch):
    monkeypatch.setenv("PQCODEC_RANGE_CODER", "python")
    assert entropy.backend() == "python"
    assert entropy.RangeEncoder().backend == "python"
    assert entropy.RangeDecoder(b"").backend == "python"
    monkeypatch.setenv("PQCODEC_RANGE_CODER", "arithmetic")
    with pytest.raises(PQCodecError, match="not a range coder"):
        entropy.backend()
    with pytest.raises(PQCodecError, match="not a range coder"):
        entropy.RangeEncoder()
    monkeypatch.setenv("PQCODEC_RANGE_CODER", "constriction")
    monkeypatch.setattr(entropy, "constriction", None)
    with pytest.raises(PQCodecError, match="not installed"):
        entropy.RangeEncoder()
    monkeypatch.delenv("PQCODEC_RANGE_CODER")
    assert entropy.backend() == "python"            # constriction missing: ours by default
    assert entropy.RangeEncoder(backend="python").backend == "python"


def test_without_constriction_the_package_imports_and_uses_ours():
    """A subprocess where `import constriction` fails, as on a platform without its wheel: pqcodec
    imports, codes with ours, and a forced constriction is a one-line PQCodecError."""
    code = ("import os, sys; sys.modules['constriction'] = None\n"
            "import numpy as np, pqcodec\n"
            "from pqcodec.coding import entropy\n"
            "enc = entropy.RangeEncoder(); enc.encode(np.array([1, 0]), entropy.uniform_weights(2))\n"
            "dec = entropy.RangeDecoder(enc.payload())\n"
            "assert list(dec.decode(entropy.uniform_weights(2))) == [1, 0] and dec.left_over() == 0\n"
            "print(entropy.backend())\n"
            "os.environ['PQCODEC_RANGE_CODER'] = 'constriction'\n"
            "try:\n"
            "    entropy.RangeEncoder()\n"
            "except pqcodec.PQCodecError as e:\n"
            "    print(e)\n")
    env = {k: v for k, v in os.environ.items() if k != "PQCODEC_RANGE_CODER"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert out.returncode == 0, out.stderr
    backend, error = out.stdout.strip().splitlines()
    assert backend == "python"
    assert error.startswith("PQCODEC_RANGE_CODER=constriction, but constriction is not installed")


@pytest.mark.parametrize("writer, reader", [("python", "constriction"), ("constriction", "python"), ("python", "python")])
def test_entropy_payloads_cross_backends(writer, reader):
    if "constriction" in (writer, reader):
        _constriction()
    rng = np.random.default_rng(11)
    stream = random_stream(rng, calls=5)
    enc = entropy.RangeEncoder(backend=writer)
    for symbols, weights in stream:
        enc.encode(symbols, weights)
    payload = enc.payload()
    dec = entropy.RangeDecoder(payload, backend=reader)
    for symbols, weights in stream:
        assert np.array_equal(dec.decode(weights), symbols)
    assert dec.left_over() == 0
    with pytest.raises(CorruptFileError, match="payload does not decode"):
        entropy.RangeDecoder(b"\xff" * 8, backend=reader).decode(entropy.uniform_weights(1))
    with pytest.raises(CorruptFileError, match="whole number"):
        entropy.RangeDecoder(payload + b"\0", backend=reader)


@pytest.mark.parametrize("backend", ["python", "constriction"])
def test_the_decoder_knows_where_the_payload_ends(backend):
    """entropy.RangeDecoder.left_over(): 0 for the encoder's words, the bytes of any word appended
    after them, None for a payload cut short. maybe_exhausted() alone let one appended word through
    (the decoder's state holds two words): the streams here include ones where it does."""
    if backend == "constriction":
        _constriction()
    rng = np.random.default_rng(11)
    let_through = 0
    for _ in range(40):
        stream = [call for call in random_stream(rng, int(rng.integers(1, 5))) if len(call[0])]
        if not stream:
            continue
        enc = entropy.RangeEncoder(backend)
        for symbols, weights in stream:
            enc.encode(symbols, weights)
        payload = enc.payload()

        def left_over(data: bytes):
            dec = entropy.RangeDecoder(data, backend)
            try:
                for symbols, weights in stream:
                    dec.decode(weights)
            except CorruptFileError:
                return "undecodable"
            return dec.left_over()
        assert left_over(payload) == 0
        for junk in (bytes(4), b"abcd", bytes(8)):
            assert left_over(payload + junk) == len(junk)
        assert left_over(payload[:-4]) in (None, "undecodable")
        old = rangecoder.RangeDecoder(np.frombuffer(payload + b"abcd", dtype="<u4"))
        for symbols, weights in stream:
            old.decode(weights)
        let_through += old.maybe_exhausted()
    assert let_through > 0
