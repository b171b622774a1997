"""What the eval scripts share: the test images, file-byte rate, per-image metrics and the result
cache."""
import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from pqcodec.data import list_images
from pqcodec.metrics import ms_ssim, psnr

ROOT = Path(__file__).resolve().parent.parent

RESULTS = ROOT / "docs" / "results"
CACHE = ROOT / "eval" / ".cache"


def load_rgb_images(folder_or_paths) -> list[tuple[str, np.ndarray]]:
    paths = folder_or_paths if isinstance(folder_or_paths, list) else list_images(folder_or_paths)
    return [(p.name, np.asarray(Image.open(p).convert("RGB"))) for p in paths]


def bpp(num_bytes: int, rgb: np.ndarray) -> float:
    return 8.0 * num_bytes / (rgb.shape[0] * rgb.shape[1])


# LPIPS, when rd.py is given its weights (enable_lpips): (model, identity of its weight files)
_lpips = None


def enable_lpips(alexnet_weights, lpips_linear=None) -> dict:
    """Adds LPIPS to every quality_row from here on; returns what names its weights (for cache keys).
    Raises perceptual.PerceptualError with a one-line message when the weights are absent."""
    global _lpips
    from . import perceptual
    from pqcodec.zoo import sha256_of
    model = perceptual.load_lpips(alexnet_weights, lpips_linear)
    linear = perceptual.lpips_linear_path(lpips_linear)
    _lpips = (model, {"lpips": [sha256_of(Path(alexnet_weights)), sha256_of(linear)]})
    return _lpips[1]


def metrics_identity() -> dict:
    """The optional metrics in use, for cache keys: rows cached without LPIPS are not reused with it."""
    return _lpips[1] if _lpips else {}


def quality_row(num_bytes: int, rgb: np.ndarray, rec: np.ndarray) -> dict:
    """File-byte rate and distortion of one coded image."""
    row = dict(bytes=num_bytes, bpp=bpp(num_bytes, rgb), psnr=psnr(rgb, rec), ms_ssim=ms_ssim(rgb, rec))
    if _lpips:
        from . import perceptual
        row["lpips"] = perceptual.mean_lpips([("", rgb, rec)], _lpips[0])["lpips"]
    return row


def image_key(rgb: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(rgb).tobytes() + str(rgb.shape).encode()).hexdigest()


def source_fingerprint(package_dir: Path) -> str:
    """Hash of a package's Python sources: cached results of a codec go stale when its code changes."""
    h = hashlib.sha256()
    for p in sorted(package_dir.rglob("*.py")):
        h.update(p.relative_to(package_dir).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


class ResultCache:
    """Per-image results on disk, keyed by everything that determines them (codec, its settings and
    version, the image's pixels), so a rerun on the same inputs recomputes nothing."""

    def __init__(self, folder: Path | None):
        self.folder = folder

    def _path(self, key: dict) -> Path:
        key = {**key, **metrics_identity()}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        return self.folder / digest[:2] / f"{digest}.json"

    def get_or_compute(self, key: dict, compute) -> dict:
        if self.folder is None:
            return compute()
        path = self._path(key)
        if path.is_file():
            return json.loads(path.read_text())
        value = compute()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(value))
        tmp.replace(path)
        return value


def mean_curve(name: str, points: list[tuple[object, list[dict]]]) -> dict:
    """CompressAI results layout from (setting, per-image rows) pairs: means over the images."""
    res = {"bpp": [], "psnr-rgb": [], "ms-ssim": [], "lpips": [], "quality": []}
    for setting, rows in points:
        res["bpp"].append(float(np.mean([r["bpp"] for r in rows])))
        res["psnr-rgb"].append(float(np.mean([r["psnr"] for r in rows])))
        ms = [r["ms_ssim"] for r in rows]
        res["ms-ssim"].append(None if None in ms else float(np.mean(ms)))
        lp = [r.get("lpips") for r in rows]
        res["lpips"].append(None if None in lp else float(np.mean(lp)))
        res["quality"].append(setting)
    if None in res["ms-ssim"]:
        del res["ms-ssim"]
    if None in res["lpips"] or not res["lpips"]:  # only where every image has it (weights given)
        del res["lpips"]
    return {"name": name, "results": res}
