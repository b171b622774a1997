"""What the eval scripts share: the test images and file-byte rate."""
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install

from pqcodec.data import list_images  # noqa: E402

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"


def load_rgb_images(folder_or_paths) -> list[tuple[str, np.ndarray]]:
    paths = folder_or_paths if isinstance(folder_or_paths, list) else list_images(folder_or_paths)
    return [(p.name, np.asarray(Image.open(p).convert("RGB"))) for p in paths]


def bpp(num_bytes: int, rgb: np.ndarray) -> float:
    return 8.0 * num_bytes / (rgb.shape[0] * rgb.shape[1])
