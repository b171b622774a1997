"""What the autoencoder and prior trainers share: distributed setup, learning-rate schedule,
resumable checkpoints and logging."""
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

from ..files import replacing


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
        torch.backends.cudnn.benchmark = True  # fixed crop and window shapes: pick the fastest kernels once
        return torch.device("cuda", local)
    return torch.device("cpu")


def lr_at(step: int, total: int, peak: float, warmup: int, floor: float = 0.02) -> float:
    """Linear warm-up, then cosine decay to floor * peak at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


class TimeBudget:
    """`--minutes`: fit a run into a wall-clock budget (a GPU lease, a session). The step rate is
    measured over the first steps after start-up, while the learning rate is still warming up, and
    the run's last step is brought forward to what fits, so the cosine decay still ends at the last
    step. Should the rate drop later (a shared machine), `expired` stops the run at the deadline."""

    SKIP, MEASURE = 10, 40  # steps: start-up (kernel selection, caches), then the timed stretch

    def __init__(self, minutes: float | None, started: float, first_step: int, steps: int, clock=time.time):
        self.first_step, self.steps, self.clock = first_step, steps, clock
        self.deadline = None if minutes is None else started + 60 * minutes
        self.timer_start = None

    def last_step(self, step: int) -> int:
        """The step the run ends at; call once per step with the steps done so far."""
        if self.deadline is None:
            return self.steps
        done = step - self.first_step
        if done == self.SKIP:
            self.timer_start = self.clock()
        elif done == self.SKIP + self.MEASURE:
            rate = self.MEASURE / (self.clock() - self.timer_start)
            fits = step + int(0.97 * rate * max(0.0, self.deadline - self.clock()))
            self.steps = min(self.steps, int(_agreed(fits, dist.ReduceOp.MIN)))
        return self.steps

    def expired(self) -> bool:
        if self.deadline is None:
            return False
        return bool(_agreed(self.clock() >= self.deadline, dist.ReduceOp.MAX))


def _agreed(value, op):
    """One value for every process of a distributed run (they must stop at the same step)."""
    if not dist.is_initialized():
        return value
    t = torch.tensor(float(value), device=f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu")
    dist.all_reduce(t, op)
    return t.item()


def save_checkpoint(path: Path, state: dict):
    """Atomic (files.replacing): a run killed mid-write leaves the previous checkpoint intact."""
    with replacing(path) as tmp:
        torch.save(state, tmp)


def save_model(model, path: Path, metadata: dict):
    """The weights file, atomically like save_checkpoint: a reader never sees half of it."""
    with replacing(path) as tmp:
        model.save(tmp, metadata)


def load_checkpoint(path: Path) -> dict | None:
    """A checkpoint's state (on the CPU), or None when there is none. weights_only: tensors and plain
    values only, so a checkpoint file cannot run code."""
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
        self.saved_step = self.checkpoint["step"] if self.checkpoint else None

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
        save_model(model, self.out / "model.safetensors", {f"{stage}_steps": str(step)})
        self.saved_step = step


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
