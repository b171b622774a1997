"""Fuzzing `decode`: a corpus of valid files from a tiny random model, mutations of them (truncated,
bit-flipped, spliced, re-headed, random), and the outcome of decoding each. Shared by the quick slice
in tests/test_fuzz.py and the long run, eval/fuzz.py."""
import random
import struct

import numpy as np

from pqcodec import bitstream
from pqcodec.errors import PQCodecError

TINY_FUZZ_CONFIG = dict(channels=8, num_subvectors=3, codebook_size=16, subvector_dim=4, prior_dim=16,
                        prior_layers=1, prior_heads=2, window=4, schedule_seed=3, levels=(1, 3))


def make_weights(path):
    import torch
    from pqcodec.model import ModelConfig, PQCodecModel
    from pqcodec.train.quantize import quantize_untrained
    torch.manual_seed(0)
    model = PQCodecModel(ModelConfig(**TINY_FUZZ_CONFIG))
    model.quantizer.codebooks.normal_(0, 0.3)
    quantize_untrained(model)
    model.save(path)
    return path


def make_corpus(codec, count: int = 12, mapped: int = 4, flat: int = 3) -> list[bytes]:
    """Valid files: noisy gradients of several sizes, both levels, several step counts, RGB and grey;
    `mapped` mapped files (format version 5: a level per window, both levels in each); and `flat`
    files with flat blocks (format version 7: rectangles of one colour pasted in, one greyscale)."""
    rng = np.random.default_rng(0)
    files = []
    for i in range(count):
        h, w = int(rng.integers(1, 48)), int(rng.integers(1, 48))
        y, x = np.mgrid[0:h, 0:w]
        rgb = np.clip(np.stack([x * 5, y * 5, (x + y) * 3], -1) + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
        if i % 4 == 3:
            rgb = np.repeat(rgb[..., :1], 3, -1)
        files.append(codec.encode(rgb, quality=1 + i % 2, steps=1 + i % 8))
    window_px = codec.config.window * codec.config.stride
    for i in range(mapped):
        h, w = int(rng.integers(1, 100)), int(rng.integers(window_px + 1, 150))
        y, x = np.mgrid[0:h, 0:w]
        rgb = np.clip(np.stack([x * 3, y * 3, (x + y) * 2], -1) + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
        grid = (-(-h // window_px), -(-w // window_px))
        counts = np.array(codec.config.active_levels)[rng.integers(0, 2, grid)]
        counts.flat[:2] = codec.config.active_levels       # both levels
        tokens = codec.image_to_tokens(rgb, codec.config.active_levels[-1])
        files.append(codec.encode_mapped(tokens, counts, (h, w), False, 1 + i % 8)[0])
    for i in range(flat):
        h, w = int(rng.integers(17, 70)), int(rng.integers(17, 70))
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for _ in range(3):
            y, x = int(rng.integers(0, h - 8)), int(rng.integers(0, w - 8))
            rgb[y:y + int(rng.integers(9, 30)), x:x + int(rng.integers(9, 30))] = rng.integers(0, 256, 3)
        if i == flat - 1:
            rgb = np.repeat(rgb[..., :1], 3, -1)
        files.append(codec.encode(rgb, quality=1 + i % 2, steps=1 + i % 8))
        assert files[-1][2] == bitstream.FLAT_VERSION
    return files


def _header_len(data: bytes) -> int:
    return len(data) - len(bitstream.unpack(data)[1])


def _flip(buf: bytearray, rng: random.Random, lo: int, hi: int, flips: int):
    for _ in range(flips):
        if hi > lo:
            i = rng.randrange(lo, hi)
            buf[i] ^= 1 << rng.randrange(8)


def mutate(corpus: list[bytes], seed: int) -> tuple[str, bytes]:
    """One fuzzed file from `seed`: (the mutation's name, the bytes)."""
    rng = random.Random(seed)
    a, b = rng.choice(corpus), rng.choice(corpus)
    ha = _header_len(a)
    kind = rng.choice(["truncate", "flip", "flip-payload", "splice", "random", "reheader", "insert-delete", "extend"])
    buf = bytearray(a)
    if kind == "truncate":
        buf = buf[:rng.randrange(len(buf))]
    elif kind == "flip":
        _flip(buf, rng, 0, len(buf), rng.randint(1, 8))
    elif kind == "flip-payload":  # header intact: the range decoder and checksum must catch it
        _flip(buf, rng, ha, len(buf), rng.randint(1, 4))
    elif kind == "splice":  # one file's header, another's payload, cut anywhere
        buf = bytearray(a[:ha] + b[_header_len(b):][rng.randrange(0, 4) * 4:])
    elif kind == "random":
        buf = bytearray(rng.randbytes(rng.randrange(0, 200)))
        if rng.random() < 0.5:
            buf[:3] = b"PQ" + bytes([bitstream.FORMAT_VERSION])
    elif kind == "reheader":  # a well-formed header with other field values over a payload
        version = rng.choice([bitstream.PLAIN_VERSION, bitstream.MAPPED_VERSION])
        mode = rng.randrange(0, 32) | (0x40 if version == bitstream.MAPPED_VERSION else 0)
        head = (bitstream.MAGIC + bytes([version]) + a[3:3 + bitstream.MODEL_HASH_BYTES]
                + bytes([mode, rng.randrange(0, 256)])
                + bytes([rng.randrange(1, 128), rng.randrange(1, 128)]) + struct.pack("<I", rng.getrandbits(32)))
        buf = bytearray(head + bitstream.header_check(head) + (b[_header_len(b):] if rng.random() < 0.7
                                                               else rng.randbytes(4 * rng.randrange(0, 40))))
    elif kind == "insert-delete":
        i = rng.randrange(ha, len(buf) + 1)
        buf = buf[:i] + rng.randbytes(rng.randrange(1, 9)) + buf[i:] if rng.random() < 0.5 else buf[:i] + buf[i + rng.randrange(1, 9):]
    else:  # extend: more words after a complete payload
        buf += rng.randbytes(4 * rng.randint(1, 8))
    return kind, bytes(buf)


def outcome(codec, data: bytes) -> str:
    """'decoded' (an image of the header's size), 'error' (a one-line PQCodecError), or raises."""
    try:
        img = codec.decode(data)
    except PQCodecError as e:
        assert "\n" not in str(e)
        return "error"
    header, _ = bitstream.unpack(data)
    assert img.size == (header.width, header.height)
    return "decoded"
