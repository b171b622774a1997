import pytest

from pqcodec import bitstream
from pqcodec import limits
from pqcodec.bitstream import Header, pack, unpack
from pqcodec.errors import CorruptFileError, UnsupportedFileError

HASH = b"\x12\x34\x56\x78"
H = Header(model_hash=HASH, active=2, steps=12, height=512, width=768, greyscale=False, checksum=0xDEADBEEF)


def test_round_trip_and_size():
    data = pack(H, b"\x01\x02\x03\x04")
    h, payload = unpack(data)
    assert h == H and payload == b"\x01\x02\x03\x04"
    assert len(data) - 4 == 19  # magic 2, version, model hash 4, mode, steps, 2+2 varints, crc 4, check 2


@pytest.mark.parametrize("side", [1, 127, 128, 16383, 16384, limits.MAX_SIDE])
def test_varint_sides(side):
    h = Header(HASH, 1, 1, side, 1, True, 0)
    assert unpack(pack(h, b""))[0] == h


M = b"PQ\x03\x12\x34\x56\x78"  # magic, version, model hash


def checked(head: bytes) -> bytes:
    """A header with a valid header check, so that the field under test is what fails."""
    return head + bitstream.header_check(head)



@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"P", "magic"),
    (b"XX\x02\x12\x34\x56\x78\x02\x0c", "magic"),
    (b"PQ", "header"),
    (b"PQ\x03\x12\x34", "header"),
    (b"PQ\x01\x01\x02\x0c\x01\x01\0\0\0\0", "version 1 .*pqcodec 0.1.0"),
    (b"PQ\x02" + M[3:] + b"\x02\x0c\x01\x01\0\0\0\0", "version 2 .*pqcodec 0.3.0"),
    (b"PQ\x09" + M[3:] + b"\x02\x0c\x01\x01\0\0\0\0", "version"),
    (M + b"\x22\x0c\x01\x01\0\0\0\0", "reserved"),
    (checked(M + b"\x00\x0c\x01\x01\0\0\0\0"), "sub-quantizers"),
    (checked(M + b"\x02\x00\x01\x01\0\0\0\0"), "steps"),
    (checked(M + b"\x02\x0c\x00\x01\0\0\0\0"), "size"),
    (checked(M + b"\x02\x0c\xff\xff\x7f\x01\0\0\0\0"), "size"),      # 2 M px high: refused, not allocated
    (M + b"\x02\x0c\xff\xff\xff\xff", "too long"),
    (M + b"\x02\x0c\x80", "header"),
    (M + b"\x02\x0c\x01\x01\0\0", "checksums"),
    (M + b"\x02\x0c\x01\x01\0\0\0\0\0\0", "header check"),
])
def test_bad_headers(data, message):
    with pytest.raises((CorruptFileError, UnsupportedFileError), match=message):
        unpack(data)


def test_pixel_limit():
    side = limits.MAX_SIDE
    with pytest.raises(ValueError, match="exceeds"):
        pack(Header(HASH, 1, 1, side, side, False, 0), b"")
