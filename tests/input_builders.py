"""Inputs Pillow cannot make, for the input-contract tests (tests/test_inputs.py) and the table they
check (eval/input_contract.py): 16-bit RGB PNGs, and ICC profiles other than sRGB (LittleCMS makes only
sRGB, Lab and XYZ ones), e.g. Adobe RGB (1998)."""
import struct
import zlib

import numpy as np


def png_16bit(a: np.ndarray) -> bytes:
    """A 16-bit PNG of a uint16 array, (H, W) greyscale or (H, W, 3) RGB (Pillow writes 16-bit grey
    only)."""
    h, w = a.shape[:2]
    colour_type = 2 if a.ndim == 3 else 0
    raw = b"".join(b"\0" + a[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


D50 = np.array([0.9642, 1.0, 0.8249])
SRGB_PRIMARIES = ((0.64, 0.33), (0.30, 0.60), (0.15, 0.06))
ADOBE_RGB_PRIMARIES = ((0.64, 0.33), (0.21, 0.71), (0.15, 0.06))
ADOBE_RGB_GAMMA = 563 / 256  # 2.19921875, as the Adobe RGB (1998) spec stores it
D65_XY = (0.3127, 0.3290)


def _xyz(xy) -> np.ndarray:
    x, y = xy
    return np.array([x / y, 1.0, (1 - x - y) / y])


def rgb_to_xyz(primaries, white_xy=D65_XY) -> np.ndarray:
    """The 3x3 matrix from linear RGB to XYZ of an RGB space with these primaries and white point."""
    m = np.stack([_xyz(p) for p in primaries], axis=1)
    return m * np.linalg.solve(m, _xyz(white_xy))


def bradford_d65_to_d50() -> np.ndarray:
    b = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])
    return np.linalg.inv(b) @ np.diag((b @ D50) / (b @ _xyz(D65_XY))) @ b


def icc_profile(description: str, gamma: float, primaries=None) -> bytes:
    """An ICC v2 display profile with a pure-gamma tone curve: an RGB matrix profile given primaries
    (D65 white, colorants adapted to D50 by Bradford, as ICC wants), else a greyscale one."""
    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz_tag(v) -> bytes:
        return b"XYZ \0\0\0\0" + b"".join(s15(c) for c in v)
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    text = description.encode("ascii") + b"\0"
    tags = {b"desc": b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + bytes(12 + 67),
            b"cprt": b"text\0\0\0\0" + b"no copyright, test profile\0",
            b"wtpt": xyz_tag(D50)}
    if primaries:
        colorants = bradford_d65_to_d50() @ rgb_to_xyz(primaries)
        for i, name in enumerate((b"r", b"g", b"b")):
            tags[name + b"XYZ"] = xyz_tag(colorants[:, i])
            tags[name + b"TRC"] = curve
    else:
        tags[b"kTRC"] = curve
    table_end = 128 + 4 + 12 * len(tags)
    entries, blob = [], b""
    for sig, data in tags.items():
        data += bytes(-len(data) % 4)
        entries.append(struct.pack(">4sII", sig, table_end + len(blob), len(data)))
        blob += data
    size = table_end + len(blob)
    header = (struct.pack(">I4sI4s4s4s", size, b"\0\0\0\0", 0x02100000, b"mntr",
                          b"RGB " if primaries else b"GRAY", b"XYZ ")
              + struct.pack(">6H", 2024, 1, 1, 0, 0, 0) + b"acsp" + bytes(24) + struct.pack(">I", 0)
              + b"".join(s15(c) for c in D50) + bytes(48))
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + b"".join(entries) + blob


def adobe_rgb_profile() -> bytes:
    return icc_profile("Adobe RGB (1998) compatible, test", ADOBE_RGB_GAMMA, ADOBE_RGB_PRIMARIES)


def linear_grey_profile() -> bytes:
    return icc_profile("Linear grey, test", 1.0)


def srgb_profile() -> bytes:
    from PIL import ImageCms
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
