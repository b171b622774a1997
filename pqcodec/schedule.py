"""The deterministic coding schedule: in which order, and in how many steps, the positions of a
prior window are revealed. Encoder and decoder derive it from (window, steps, seed) alone.

The order is a seeded shuffle computed with integer arithmetic only (splitmix64 + Fisher-Yates), so
it is the same with every numpy/torch version. Step sizes follow MaskGIT's cosine curve: few
positions in the first steps (coded with little context) and ever more once context exists.
"""
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

_MASK64 = (1 << 64) - 1


def _splitmix64(state: int) -> tuple[int, int]:
    state = (state + 0x9E3779B97F4A7C15) & _MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return state, z ^ (z >> 31)


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

    def positions(self, step: int) -> np.ndarray:
        """The window positions revealed at `step` (0-based)."""
        return self.order[self.boundaries[step]:self.boundaries[step + 1]]
