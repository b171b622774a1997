"""The coding schedule: in which order, and in how many steps, the positions of a window are
revealed, and the draws of a generated file's later steps. Integer arithmetic only (splitmix64),
so encoder and decoder derive the same on every machine, numpy and torch version. Changing anything
here changes files (bump bitstream.FORMAT_VERSION; tests/test_golden.py).
"""
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import numpy as np

from .layout import PROB_BITS

DEFAULT_STEPS = 12       # coding steps per window when the caller names none
_MASK64 = (1 << 64) - 1


_GAMMA = 0x9E3779B97F4A7C15


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's output function on uint64 arrays (arithmetic modulo 2^64)."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _splitmix64(state: int) -> tuple[int, int]:
    """One step of splitmix64: (the next state, its output)."""
    state = (state + _GAMMA) & _MASK64
    return state, int(_mix64(np.array([state], dtype=np.uint64))[0])


def seeded_permutation(n: int, seed: int) -> np.ndarray:
    order = list(range(n))
    state = seed
    for i in range(n - 1, 0, -1):
        state, r = _splitmix64(state)
        j = r % (i + 1)
        order[i], order[j] = order[j], order[i]
    return np.array(order, dtype=np.int64)


def cosine_boundaries(n: int, steps: int) -> list[int]:
    """Positions revealed after each step, b[t] for t = 0..steps: strictly increasing from 0 to n,
    following 1 - cos(pi/2 * t/steps)."""
    b = [0]
    for t in range(1, steps + 1):
        target = round(n * (1 - math.cos(math.pi / 2 * t / steps)))
        # at least one position per step, and room left for the steps still to come
        b.append(min(max(target, b[-1] + 1), n - (steps - t)))
    return b


@dataclass(frozen=True)
class Schedule:
    """In which order, and in how many steps, the positions of a window are revealed; encoder and
    decoder derive it from (window, steps, seed) alone. The order is a seeded shuffle computed with
    integer arithmetic only (splitmix64 + Fisher-Yates), so it is the same with every numpy or
    torch version; step sizes follow MaskGIT's cosine curve: few positions in the first steps
    (coded with little context), ever more once context exists."""
    window: int
    steps: int
    seed: int

    def __post_init__(self):
        if not 1 <= self.steps <= self.window ** 2:
            raise ValueError(f"steps must be in 1..{self.window ** 2}, got {self.steps}")

    @cached_property
    def order(self) -> np.ndarray:
        """Window positions (row-major indices) in the order they are revealed."""
        return seeded_permutation(self.window ** 2, self.seed)

    @cached_property
    def boundaries(self) -> list[int]:
        return cosine_boundaries(self.window ** 2, self.steps)

    def step_of(self) -> np.ndarray:
        """The step (0-based) revealing each window position (row-major), (window^2,) int64."""
        out = np.empty(self.window ** 2, dtype=np.int64)
        for t in range(self.steps):
            out[self.positions(t)] = t
        return out

    def positions(self, step: int) -> np.ndarray:
        """The window positions revealed at `step` (0-based)."""
        return self.order[self.boundaries[step]:self.boundaries[step + 1]]


class DrawnSteps(Protocol):
    """What the token coder reads of a generated file's header (bitstream.Generated has it): from
    step `sent` on, the schedule's indices are drawn from the prior's tables by `sample_symbols`
    (sharpen, seed), not coded."""
    sent: int
    sharpen: int
    seed: int


# -- a generated file's drawn indices ---------------------------------------------------------------
def sample_symbols(weights: np.ndarray, sharpen: int, seed: int, counter: int) -> np.ndarray:
    """The indices a generated file's decoder draws from frequency tables `weights` (m, K) (float64
    integers f - 1, as the range coder takes them): the counter-th to (counter+m-1)-th draws of the
    file. Integer arithmetic only, so every machine draws the same:
    - sharpen 0: the most probable symbol (the lowest index among equals);
    - sharpen n >= 1: symbol i with probability v_i / sum(v), v_i = ((f_i >> s) + 1)^n, s the
      smallest shift that keeps the sum below 2^63; the uniform integer is r mod sum(v), r the
      splitmix64 output for (seed, counter + j)."""
    f = weights.astype(np.int64) + 1                                    # (m, K), 1..2^PROB_BITS
    if sharpen == 0:
        return np.argmax(f, axis=1).astype(np.int64)
    m, K = f.shape
    shift = max(0, PROB_BITS + 1 - (63 - math.ceil(math.log2(K))) // sharpen)
    v = ((f >> shift) + 1) ** sharpen                                   # each < 2^(63 - log2 K)
    cdf = np.cumsum(v, axis=1)                                          # exact int64
    key = np.uint64(_splitmix64(seed)[1])
    with np.errstate(over="ignore"):
        r = _mix64(key + (np.arange(m, dtype=np.uint64) + np.uint64(counter + 1)) * np.uint64(_GAMMA))
    u = (r % cdf[:, -1].astype(np.uint64)).astype(np.int64)             # (m,) in 0..sum-1
    return (cdf <= u[:, None]).sum(axis=1).astype(np.int64)
