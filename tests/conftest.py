"""Shared fixtures. `tiny_weights` is a randomly initialised model small enough to code images in
milliseconds: the exactness and robustness tests need a real prior and range coder, not good
compression. The end-to-end tests use the shipped weights."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pqcodec import bitstream
from pqcodec.model import ModelConfig, PQCodecModel
from pqcodec.train.quantize import quantize_untrained as calibrated

DATA = Path(__file__).parent / "data"
TINY = ModelConfig(channels=8, num_subvectors=2, codebook_size=16, subvector_dim=4,
                   prior_dim=16, prior_layers=1, prior_heads=2, window=4, schedule_seed=3)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    tiny_model(TINY).save(path)
    return path


def tiny_model(config: ModelConfig) -> PQCodecModel:
    """A randomly initialised model of `config` (seed 0), its integer prior calibrated, its codebooks
    spread so that random images use many codes."""
    torch.manual_seed(0)
    model = PQCodecModel(config)
    model.quantizer.codebooks.normal_(0, 0.3)
    return calibrated(model)


@pytest.fixture(scope="session")
def tiny_codec(tiny_weights):
    from pqcodec.zoo import load_custom_codec
    return load_custom_codec(str(tiny_weights))


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """A folder of 6 small PNGs (80..120 x 96) to train on (tiny configs, 32 px crops)."""
    from PIL import Image
    d = tmp_path_factory.mktemp("images")
    for i in range(6):
        Image.fromarray(random_image(80 + 8 * i, 96, seed=i)).save(d / f"{i}.png")
    return d


@pytest.fixture(scope="session")
def flat_blocks_bin(tiny_codec, tmp_path_factory) -> tuple[Path, bytes]:
    """A .bin (tiny model) of a 256x256 image of 8x8 blocks in random colours, and the PNG pqcodec
    decodes it to: the flat blocks come back in their colours, so the decoded image has 1024 colours
    (more than a palette holds) and its PNG is over 4 KB (more than the smallest pipe holds)."""
    from pqcodec.image import image_bytes
    rng = np.random.default_rng(0)
    image = np.kron(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), np.ones((8, 8, 1), dtype=np.uint8))
    path = tmp_path_factory.mktemp("blocks") / "blocks.bin"
    path.write_bytes(tiny_codec.encode(image))
    return path, image_bytes(tiny_codec.decode(path.read_bytes()), "PNG")


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth-ish random RGB content (a noisy gradient) of size h x w, uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 / max(w, 1)), (y * 255 / max(h, 1)), ((x + y) % 64) * 4], -1)
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def run_cli(*args, stdin: bytes | None = None, cwd=None):
    import subprocess
    return subprocess.run([sys.executable, "-m", "pqcodec", *map(str, args)], input=stdin,
                          capture_output=True, cwd=cwd, timeout=300)


def patched(data: bytes, at: int, value: int) -> bytes:
    """`data` with header byte `at` set to `value` and the header check redone, so that the decoder
    meets the changed field rather than a damaged header."""
    payload = bitstream.unpack(data)[1]
    head = bytearray(data[:len(data) - len(payload) - 2])
    head[at] = value
    return bytes(head) + bitstream.header_check(bytes(head)) + payload


@pytest.fixture
def cli(capsysbinary):
    """Runs `pqcodec ARGS` in this process: a CompletedProcess (status, stdout, stderr bytes)."""
    def run(*args):
        from pqcodec.cli import main
        args = [str(a) for a in args]
        try:
            status = main(args)
        except SystemExit as e:  # argparse: --help, a bad command line
            status = e.code
        out, err = capsysbinary.readouterr()
        return subprocess.CompletedProcess(args, status, out, err)
    return run
