"""The level map (pqcodec/levelmap.py, format version 5): a level per prior window. A mapped file
round-trips, each window costs what it costs in its own level's plain file, the decoder gives each
position the sub-vectors of its window's level, malformed maps and headers are refused, and the
allocation spends the budget well."""
import itertools

import numpy as np
import pytest
import torch

from conftest import random_image
from pqcodec import bitstream, levelmap
from pqcodec.coding import layout
from pqcodec.coding.layout import UNUSED
from pqcodec.errors import CorruptFileError, PQCodecError

# 7 x 7 windows of the tiny model's 4 x 4 tokens (32 px)
BIG = random_image(200, 200, seed=11)


def _mapped(tiny_codec, counts):
    tokens = tiny_codec.image_to_tokens(BIG, 2)
    return tokens, tiny_codec.encode_mapped(tokens, counts, BIG.shape[:2], False, 12)


@pytest.fixture(scope="module")
def group_of_two_chunks():
    """Counts per window: 41 windows of 1 sub-quantizer (two chunks of that group) and 8 of 2."""
    counts = np.ones((7, 7), dtype=np.int64)
    counts[2:4, 1:5] = 2
    assert (counts == 1).sum() > layout.WINDOW_CHUNK
    return counts


def test_mapped_file_round_trips(tiny_codec, group_of_two_chunks):
    counts = group_of_two_chunks
    tokens, (data, stats) = _mapped(tiny_codec, counts)
    header, decoded = tiny_codec.decode_tokens(data)
    assert header.version == bitstream.MAPPED_VERSION and header.mapped and header.active == 2
    assert np.array_equal(decoded, stats.tokens)
    # the first sub-quantizer everywhere, the second only in the windows of count 2
    per_position = np.kron(counts, np.ones((4, 4), dtype=np.int64))[:25, :25]
    assert np.array_equal(decoded[0], tokens[0])
    assert np.array_equal(decoded[1], np.where(per_position == 2, tokens[1], UNUSED))
    assert tiny_codec.encode_tokens(decoded, 200, 200) == data
    assert np.array_equal(np.asarray(tiny_codec.decode(data)), tiny_codec.tokens_to_image(decoded, 200, 200))


def test_each_window_costs_what_it_costs_at_its_own_level(tiny_codec, group_of_two_chunks):
    counts = group_of_two_chunks
    rgb_tokens = tiny_codec.image_to_tokens(BIG, 2)
    plain = {c: tiny_codec.encode_analysed(rgb_tokens[:c], BIG.shape[:2], False, 12)[1].window_bits for c in (1, 2)}
    _, (data, stats) = _mapped(tiny_codec, counts)
    expected = np.where(counts == 1, plain[1], plain[2])
    assert np.allclose(stats.window_bits, expected, rtol=1e-9)
    assert plain[1].sum() < stats.window_bits.sum() < plain[2].sum()


def test_each_position_decodes_at_its_windows_level(tiny_codec):
    q = tiny_codec.model.quantizer
    tokens = torch.from_numpy(tiny_codec.image_to_tokens(BIG, 2))[None]          # (1, 2, h, w)
    counts = torch.from_numpy(np.random.default_rng(0).integers(1, 3, tokens.shape[2:]))[None]
    unused = torch.where(torch.arange(2)[None, :, None, None] < counts[:, None], tokens, UNUSED)
    mixed = q.decode(unused, counts)
    for c in (1, 2):
        at = (counts == c)[:, None].expand_as(mixed)
        assert torch.equal(mixed[at], q.decode(tokens, c)[at])


def test_malformed_maps_are_refused(tiny_codec):
    tokens = tiny_codec.image_to_tokens(BIG, 2)
    holes = tokens.copy()
    holes[0, 0, 0] = UNUSED                       # a used index after an unused one
    with pytest.raises(PQCodecError, match="must follow"):
        tiny_codec.encode_tokens(holes, 200, 200)
    split = tokens.copy()
    split[1, 0, 0] = UNUSED                       # one position of a window at another count
    with pytest.raises(PQCodecError, match="same number"):
        tiny_codec.encode_tokens(split, 200, 200)
    with pytest.raises(PQCodecError, match="token values"):
        tiny_codec.encode_tokens(tokens - 2, 200, 200)


def test_a_count_that_is_no_level_is_refused():
    from pqcodec.zoo import load_codec
    coder = load_codec().token_coder                 # levels 1, 2, 4, 8, 12
    tokens = np.zeros((4, 16, 32), dtype=np.int64)
    tokens[3:, :, 16:] = UNUSED                   # the second window uses 3
    with pytest.raises(ValueError, match=r"\[3\] are no level"):
        coder.window_counts(tokens)


def test_mapped_headers_are_checked(tiny_codec, group_of_two_chunks):
    _, (data, _) = _mapped(tiny_codec, group_of_two_chunks)
    mode = 3 + bitstream.MODEL_HASH_BYTES

    def with_header(version, mode_byte):
        head = bytearray(data)
        head[2], head[mode] = version, mode_byte
        # recompute the header check so that only the field under test is wrong
        end = len(data) - len(bitstream.unpack(data)[1]) - 2
        head[end:end + 2] = bitstream.header_check(bytes(head[:end]))
        return bytes(head)

    m = data[mode]
    with pytest.raises(CorruptFileError, match="reserved mode bits"):
        bitstream.unpack(with_header(bitstream.PLAIN_VERSION, m))        # version 3 with the map bit
    with pytest.raises(CorruptFileError, match="without a level map"):
        bitstream.unpack(with_header(bitstream.MAPPED_VERSION, m & ~0x40))
    with pytest.raises(CorruptFileError, match="reserved mode bits"):
        bitstream.unpack(with_header(bitstream.MAPPED_VERSION, m | 0x20))  # mapped and generated
    for cut in (4, 8, len(data) // 2):
        with pytest.raises(CorruptFileError):
            tiny_codec.decode_tokens(data[:-cut])


def test_map_tables_sum_to_the_coders_total():
    for choices in (1, 2, 3, 5, 15):
        w = layout.map_weights(4, choices)
        assert w.shape == (4, choices) and (w >= 0).all()
        assert (w.sum(1) == (1 << layout.PROB_BITS) - choices).all()


def test_allocation_fits_and_leaves_no_upgrade_that_fits():
    rng = np.random.default_rng(5)
    for trial in range(20):
        bits = np.cumsum(rng.uniform(10, 100, (4, 6)), 0)                  # (levels, windows), growing
        sse = np.cumsum(rng.uniform(1, 50, (4, 6))[::-1], 0)[::-1]          # falling with the level
        for budget in np.linspace(bits[0].sum(), bits[-1].sum(), 7):
            choice = levelmap.allocate(bits, sse, budget)
            cols = np.arange(6)
            spent, total = bits[choice, cols].sum(), sse[choice, cols].sum()
            assert spent <= budget + 1e-9
            # no single window's upgrade fits in what is left
            extra = bits - bits[choice, cols]
            assert not ((extra > 0) & (extra <= budget - spent + 1e-9) & (sse < sse[choice, cols])).any()
            # never worse than one level everywhere, and close to the exhaustive optimum
            for level in range(4):
                if bits[level].sum() <= budget:
                    assert total <= sse[level].sum() + 1e-9
            best = min(sse[list(c), cols].sum() for c in itertools.product(range(4), repeat=6)
                       if bits[list(c), cols].sum() <= budget)
            assert total <= 1.1 * best
    assert levelmap.allocate(bits, sse, bits[0].sum() - 1) is None


def test_window_sse_sums_each_windows_pixels():
    rgb = np.zeros((40, 70, 3), dtype=np.uint8)
    dec = rgb.copy()
    dec[0, 0] = 2                                  # window (0, 0): 3 channels x 4
    dec[39, 69, 1] = 3                             # the clipped corner window: 9
    out = levelmap.window_sse(rgb, dec, 32)
    assert out.shape == (2, 3) and out[0, 0] == 12 and out[1, 2] == 9 and out.sum() == 21


def test_window_sse_is_the_whole_image_float_sum():
    """A row of windows at a time in integers: the float64 sums of the whole-image formula, exactly."""
    rng = np.random.default_rng(3)
    rgb, dec = (rng.integers(0, 256, (300, 257, 3), dtype=np.uint8) for _ in range(2))
    err = np.square(rgb.astype(np.float64) - dec.astype(np.float64)).sum(-1)
    padded = np.zeros((3 * 128, 3 * 128))
    padded[:300, :257] = err
    assert np.array_equal(levelmap.window_sse(rgb, dec, 128), padded.reshape(3, 128, 3, 128).sum((1, 3)))


def test_a_map_of_one_level_is_refused(tiny_codec):
    """The encoder writes one level as a plain file; a mapped file that decodes to one level (or whose
    header count leaves the map one symbol) is damage, so a decoded file always re-encodes to its bytes."""
    from pqcodec.coding.token_coder import TokenCoder
    coder = tiny_codec.token_coder
    assert isinstance(coder, TokenCoder)
    with pytest.raises(CorruptFileError, match="above the lowest level"):
        coder.decompress(b"\0" * 8, 1, 8, 8, 12, mapped=True)
    # a valid payload of a one-level map, made by hand: the map's symbols, then a plain level-2 chunk
    from pqcodec.coding.entropy import RangeEncoder
    enc = RangeEncoder()
    enc.encode(np.zeros(4, dtype=np.int64) + 1, layout.map_weights(4, 2))   # every window at level 2
    with pytest.raises(CorruptFileError, match="one level"):
        coder.decompress(enc.payload(), 2, 8, 8, 12, mapped=True)


def test_unused_indices_must_follow_the_used_ones_to_decode(tiny_codec):
    tokens = tiny_codec.image_to_tokens(BIG, 2)
    tokens[0, 0, 0] = UNUSED
    with pytest.raises(PQCodecError, match="must follow"):
        tiny_codec.tokens_to_image(tokens, 200, 200)
