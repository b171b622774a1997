#!/usr/bin/env python3
"""Perceptual quality of reconstructions: FID and KID (torch-fidelity) on 256x256 patches, following
HiFiC (Mentzer et al. 2020), and mean LPIPS (lpips package, AlexNet) over whole images.

    python -m eval.perceptual ORIGINALS_DIR RECONSTRUCTIONS_DIR \\
        --inception-weights weights-inception-2015-12-05-6726825d.pth \\
        --alexnet-weights alexnet-owt-7be5be79.pth [--lpips-linear alex.pth] [--json out.json]

Weights are only ever read from the given local files, never downloaded. See docs/perceptual.md.
"""
import argparse
import importlib.util
import json
import sys
import warnings
from pathlib import Path

import numpy as np

PATCH = 256
FID_LAYER = "2048"  # the standard FID/KID features: Inception's pool3
INCEPTION = "inception-v3-compat"  # torch-fidelity's name for the TF-compatible Inception
RANDOM_LABEL = "random (plumbing test only)"
WEIGHTS_HELP = (
    "FID/KID need torch-fidelity's Inception weights-inception-2015-12-05-6726825d.pth "
    "(https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth); "
    "LPIPS needs torchvision's AlexNet alexnet-owt-7be5be79.pth "
    "(https://download.pytorch.org/models/alexnet-owt-7be5be79.pth), its linear layers weights/v0.1/alex.pth "
    "ship inside the lpips wheel")


class PerceptualError(Exception):
    """Bad input or weights: the CLI prints the message on one line and exits 1."""


def _one_line(e: Exception) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 300 else text[:299] + "…"


def hific_patch_positions(height: int, width: int, size: int = PATCH) -> list[tuple[int, int]]:
    """(top, left) of the HiFiC evaluation patches: the non-overlapping size x size grid, then the
    same grid shifted by size/2 in both directions; partial patches are dropped."""
    return [(y, x) for off in (0, size // 2)
            for y in range(off, height - size + 1, size)
            for x in range(off, width - size + 1, size)]


def load_pairs(originals_dir, reconstructions_dir) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, original, reconstruction) for every original, matched by file stem, same size."""
    from PIL import Image
    from pqcodec.data import list_images

    def by_stem(folder):
        try:
            paths = list_images(folder)
        except FileNotFoundError as e:
            raise PerceptualError(str(e)) from None
        stems = {}
        for p in paths:
            if p.stem in stems:
                raise PerceptualError(f"two images with stem {p.stem!r} under {folder}: {stems[p.stem]}, {p}")
            stems[p.stem] = p
        return stems

    orig, rec = by_stem(originals_dir), by_stem(reconstructions_dir)
    if missing := sorted(orig.keys() - rec.keys()):
        raise PerceptualError(f"no reconstruction for {len(missing)} original(s) in {reconstructions_dir}: "
                              f"{', '.join(missing[:5])}")
    if extra := sorted(rec.keys() - orig.keys()):
        raise PerceptualError(f"{len(extra)} reconstruction(s) without an original in {originals_dir}: "
                              f"{', '.join(extra[:5])}")
    stems = sorted(orig)
    pairs = []
    rgb = lambda path: np.asarray(Image.open(path).convert("RGB"))  # noqa: E731 (as common.load_rgb_images)
    for name, a, b in ((orig[s].name, rgb(orig[s]), rgb(rec[s])) for s in stems):
        if a.shape != b.shape:
            raise PerceptualError(f"{name}: original is {a.shape[1]}x{a.shape[0]}, "
                                  f"reconstruction {b.shape[1]}x{b.shape[0]}")
        pairs.append((name, a, b))
    return pairs


def require_module(module: str):
    if importlib.util.find_spec(module) is None:
        raise PerceptualError(f"{module} is not installed: pip install -e '.[perceptual]' "
                              "(needs torchvision, see docs/perceptual.md)")


def require_file(path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise PerceptualError(f"{what} weights not found: {path} ({WEIGHTS_HELP})")
    return path


def _device():
    import torch
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _patch_dataset(images: list[np.ndarray]):
    """torch-fidelity's input: a Dataset of uint8 3xHxW tensors, here the HiFiC patches of `images`."""
    import torch
    from torch.utils.data import Dataset

    class Patches(Dataset):
        def __init__(self):
            self.items = [(img, y, x) for img in images for y, x in hific_patch_positions(*img.shape[:2])]

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            img, y, x = self.items[i]
            return torch.from_numpy(np.ascontiguousarray(img[y:y + PATCH, x:x + PATCH].transpose(2, 0, 1)))

    return Patches()


def fid_kid(pairs, inception_weights, feature_layer: str = FID_LAYER) -> dict:
    """FID and KID between the HiFiC patches of the originals and of the reconstructions."""
    require_module("torch_fidelity")
    path = require_file(inception_weights, "Inception")
    import torch
    import torch_fidelity
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    try:
        # a plain tensor file (safe load) before torch-fidelity unpickles it with weights_only=False,
        # then its own strict load, so a wrong file fails here with one line rather than mid-run
        torch.load(path, map_location="cpu", weights_only=True)
        FeatureExtractorInceptionV3(INCEPTION, [feature_layer], feature_extractor_weights_path=str(path))
    except Exception as e:
        raise PerceptualError(f"cannot load Inception weights {path}: {_one_line(e)}") from None
    originals, reconstructions = _patch_dataset([a for _, a, _ in pairs]), _patch_dataset([b for _, _, b in pairs])
    n = len(originals)
    if n < 2:
        raise PerceptualError(f"FID/KID need at least 2 patches of {PATCH}x{PATCH}, the images give {n}")
    m = torch_fidelity.calculate_metrics(
        input1=originals, input2=reconstructions, fid=True, kid=True, feature_extractor=INCEPTION,
        feature_layer_fid=feature_layer, feature_layer_kid=feature_layer,
        feature_extractor_weights_path=str(path), kid_subset_size=min(1000, n),
        cuda=_device().type == "cuda", batch_size=32, cache=False, save_cpu_ram=True, verbose=False)
    return {"fid": m[torch_fidelity.KEY_METRIC_FID], "kid_mean": m[torch_fidelity.KEY_METRIC_KID_MEAN],
            "kid_std": m[torch_fidelity.KEY_METRIC_KID_STD], "patches": n, "kid_subset_size": min(1000, n)}


def default_lpips_linear() -> Path:
    """The v0.1 AlexNet linear layers inside the installed lpips package (found without importing it)."""
    require_module("lpips")
    return Path(importlib.util.find_spec("lpips").origin).parent / "weights" / "v0.1" / "alex.pth"


def lpips_linear_path(given=None) -> Path:
    """The LPIPS linear-layer file: the one given, else the installed lpips package's."""
    return Path(given) if given else default_lpips_linear()


def load_lpips(alexnet_weights, lpips_linear=None):
    """LPIPS-Alex from local files only: the linear layers and a torchvision AlexNet state dict."""
    linear = require_file(lpips_linear_path(lpips_linear), "LPIPS linear-layer")
    alex_path = require_file(alexnet_weights, "AlexNet")
    import lpips
    import torch
    try:
        # pnet_rand: lpips would otherwise fetch the torchvision weights itself; the backbone is filled below
        with warnings.catch_warnings():  # lpips still calls torchvision with the deprecated `pretrained=`
            warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
            model = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, model_path=str(linear), verbose=False)
        # lpips loads the linear layers with strict=False, so check that they were all there
        lin_keys = {k for k in model.state_dict() if k.startswith("lin") and not k.startswith("lins.")}
        found = set(torch.load(linear, map_location="cpu", weights_only=True))
        if found != lin_keys:
            raise ValueError(f"expected keys {sorted(lin_keys)}, found {sorted(found)[:8]}")
    except Exception as e:
        raise PerceptualError(f"cannot load LPIPS linear layers {linear}: {_one_line(e)}") from None
    try:
        alex = torch.load(alex_path, map_location="cpu", weights_only=True)
        # lpips' slice{k}.{i}.* hold torchvision's features.{i}.* (same module index i)
        names = list(model.net.state_dict())
        wanted = {n: "features." + n.split(".", 1)[1] for n in names}
        if missing := [src for src in wanted.values() if src not in alex]:
            raise ValueError(f"not a torchvision AlexNet state dict, missing {', '.join(missing)}")
        model.net.load_state_dict({n: alex[src] for n, src in wanted.items()}, strict=True)
    except Exception as e:
        raise PerceptualError(f"cannot load AlexNet weights {alex_path}: {_one_line(e)}") from None
    return model.to(_device()).eval()


def mean_lpips(pairs, model) -> dict:
    """Mean LPIPS over whole images (inputs scaled to [-1, 1])."""
    import torch

    def tensor(rgb):
        return torch.tensor(rgb).permute(2, 0, 1)[None].float().div(127.5).sub(1).to(_device())

    with torch.inference_mode():
        scores = [float(model(tensor(a), tensor(b))) for _, a, b in pairs]
    return {"lpips": float(np.mean(scores)), "lpips_images": len(scores)}


def random_backbone_metrics(pair_sets: dict, workdir, feature_layer: str = "192", seed: int = 0) -> dict:
    """PLUMBING TEST ONLY: the same FID/KID/LPIPS code with randomly initialised Inception and
    AlexNet backbones, whose weights are written to `workdir`, for each named list of pairs. The
    figures mean nothing as FID, KID or LPIPS and each result is labelled so; the CLI cannot reach
    this. The shallow `feature_layer` keeps tests fast on CPU (pool3, 2048, costs seconds per FID)."""
    import torch
    import torchvision
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class RandomInception(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):  # keep the random initialisation
            return None

    workdir = Path(workdir)
    torch.manual_seed(seed)
    torch.save({}, workdir / "empty.pth")  # the constructor reads some file; its content is ignored above
    inception = RandomInception(INCEPTION, [feature_layer], feature_extractor_weights_path=str(workdir / "empty.pth"))
    for conv in (m for m in inception.modules() if isinstance(m, torch.nn.Conv2d)):
        # PyTorch's default init shrinks activations to ~0 over Inception's depth; He init keeps them O(1)
        torch.nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
    torch.save(inception.state_dict(), workdir / "random-inception.pth")
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), workdir / "random-alexnet.pth")
    model = load_lpips(workdir / "random-alexnet.pth")
    return {name: {"backbone": RANDOM_LABEL, **fid_kid(pairs, workdir / "random-inception.pth", feature_layer),
                   **mean_lpips(pairs, model)}
            for name, pairs in pair_sets.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m eval.perceptual", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("originals")
    ap.add_argument("reconstructions")
    ap.add_argument("--inception-weights", help="torch-fidelity Inception: weights-inception-2015-12-05-6726825d.pth")
    ap.add_argument("--alexnet-weights", help="torchvision AlexNet: alexnet-owt-7be5be79.pth")
    ap.add_argument("--lpips-linear", help="LPIPS linear layers (default: the installed lpips' weights/v0.1/alex.pth)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    try:
        # every check that needs no torch comes first, so that usage errors answer at once
        if not args.inception_weights and not args.alexnet_weights:
            raise PerceptualError(f"give --inception-weights and/or --alexnet-weights: {WEIGHTS_HELP}")
        if args.lpips_linear and not args.alexnet_weights:
            raise PerceptualError("--lpips-linear needs --alexnet-weights")
        if args.inception_weights:
            require_module("torch_fidelity")
            require_file(args.inception_weights, "Inception")
        linear = lpips_linear_path(args.lpips_linear) if args.alexnet_weights else None
        if args.alexnet_weights:
            require_file(linear, "LPIPS linear-layer")
            require_file(args.alexnet_weights, "AlexNet")
        pairs = load_pairs(args.originals, args.reconstructions)
        from pqcodec.zoo import sha256_of  # provenance of every figure: which files gave it
        weights = {"inception": args.inception_weights, "alexnet": args.alexnet_weights, "lpips_linear": linear}
        out = {"originals": str(args.originals), "reconstructions": str(args.reconstructions), "images": len(pairs),
               "weights": {k: {"path": str(Path(v).resolve()), "sha256": sha256_of(Path(v))}
                           for k, v in weights.items() if v}}
        if args.alexnet_weights:
            model = load_lpips(args.alexnet_weights, linear)  # before the long FID run: fail early
        if args.inception_weights:
            out.update(fid_kid(pairs, args.inception_weights))
            print(f"FID {out['fid']:.3f}, KID {out['kid_mean']:.5f} ± {out['kid_std']:.5f} "
                  f"over {out['patches']} patches of {PATCH}x{PATCH} ({len(pairs)} images)")
        if args.alexnet_weights:
            out.update(mean_lpips(pairs, model))
            print(f"LPIPS (alex) {out['lpips']:.4f} mean over {len(pairs)} images")
    except PerceptualError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
