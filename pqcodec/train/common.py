"""What the autoencoder and prior trainers share: distributed setup, learning-rate schedule,
resumable checkpoints and logging."""
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist


def setup_distributed() -> tuple[int, int]:
    """(rank, world_size). Under torchrun (WORLD_SIZE set) joins the process group: nccl on GPU,
    gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank() if dist.is_initialized() else 0), world


def pick_device() -> torch.device:
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def lr_at(step: int, total: int, peak: float, warmup: int, floor: float = 0.02) -> float:
    """Linear warm-up, then cosine decay to floor * peak at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


def save_checkpoint(path: Path, state: dict):
    """Atomic: a run killed mid-write leaves the previous checkpoint intact."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict | None:
    return torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None


class Logger:
    """Appends one JSON line per report to OUT/log.jsonl (rank 0 only)."""

    def __init__(self, out: Path, enabled: bool):
        self.enabled = enabled
        self.path = out / "log.jsonl"
        self.t0 = time.time()

    def log(self, **fields):
        if self.enabled:
            fields["wall_s"] = round(time.time() - self.t0, 1)
            with open(self.path, "a") as f:
                f.write(json.dumps(fields) + "\n")
