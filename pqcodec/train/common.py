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


class Run:
    """One training run's folder: the process group, the checkpoint to resume from, the log, and
    what each save writes (OUT/<name>.ckpt to resume, OUT/model.safetensors to use)."""

    def __init__(self, out: str, name: str):
        self.rank, self.world = setup_distributed()
        self.device = pick_device()
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.ckpt_path = self.out / f"{name}.ckpt"
        self.checkpoint = load_checkpoint(self.ckpt_path)
        self.log = Logger(self.out, self.rank == 0)
        self.started = time.time()
        self.wall_before = 0.0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def resumed_model(self):
        """The model of the checkpoint, or None when starting afresh."""
        from ..model import ModelConfig, PQCodecModel
        if self.checkpoint is None:
            return None
        model = PQCodecModel(ModelConfig.from_json(self.checkpoint["config"]))
        model.load_state_dict(self.checkpoint["model"])
        return model

    def resume_optimizer(self, opt) -> int:
        """Restores the optimiser; returns the step to continue from (0 afresh)."""
        if self.checkpoint is None:
            return 0
        opt.load_state_dict(self.checkpoint["optimizer"])
        self.wall_before = self.checkpoint["wall_s"]
        return self.checkpoint["step"]

    def total_wall_s(self) -> float:
        return self.wall_before + time.time() - self.started

    def save(self, model, opt, step: int, stage: str):
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                 "config": model.config.to_json(), "wall_s": self.total_wall_s()}
        save_checkpoint(self.ckpt_path, state)
        model.save(self.out / "model.safetensors", {f"{stage}_steps": str(step)})


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
