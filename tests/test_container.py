import pytest

from pqcodec import container
from pqcodec.container import Header, pack, unpack
from pqcodec.errors import CorruptFileError, UnsupportedFileError

H = Header(model_id=1, active=2, steps=12, height=512, width=768, greyscale=False, checksum=0xDEADBEEF)


def test_round_trip_and_size():
    data = pack(H, b"\x01\x02\x03\x04")
    h, payload = unpack(data)
    assert h == H and payload == b"\x01\x02\x03\x04"
    assert len(data) - 4 == 14  # magic 2, version, model, mode, steps, 2+2 varints, crc 4


@pytest.mark.parametrize("side", [1, 127, 128, 16383, 16384, container.MAX_SIDE])
def test_varint_sides(side):
    h = Header(0, 1, 1, side, 1, True, 0)
    assert unpack(pack(h, b""))[0] == h


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"P", "magic"),
    (b"XX\x01\x01\x02\x0c", "magic"),
    (b"PQ\x01", "header"),
    (b"PQ\x09\x01\x02\x0c\x01\x01\0\0\0\0", "version"),
    (b"PQ\x01\x01\x22\x0c\x01\x01\0\0\0\0", "reserved"),
    (b"PQ\x01\x01\x00\x0c\x01\x01\0\0\0\0", "sub-quantizers"),
    (b"PQ\x01\x01\x02\x00\x01\x01\0\0\0\0", "steps"),
    (b"PQ\x01\x01\x02\x0c\x00\x01\0\0\0\0", "size"),
    (b"PQ\x01\x01\x02\x0c\xff\xff\x7f\x01\0\0\0\0", "size"),      # 2 M px high: refused, not allocated
    (b"PQ\x01\x01\x02\x0c\xff\xff\xff\xff", "too long"),
    (b"PQ\x01\x01\x02\x0c\x80", "header"),
    (b"PQ\x01\x01\x02\x0c\x01\x01\0\0", "checksum"),
])
def test_bad_headers(data, message):
    with pytest.raises((CorruptFileError, UnsupportedFileError), match=message):
        unpack(data)


def test_pixel_limit():
    side = container.MAX_SIDE
    with pytest.raises(ValueError, match="exceeds"):
        pack(Header(1, 1, 1, side, side, False, 0), b"")
