"""A chunk's windows split among threads: the prior's work of each group of windows on a thread of
its own, the range coder's in coding order on one.

The integer prior's integers do not depend on which windows share a batch (integer_prior.py), so a
chunk's windows can go through it in groups, each group's on its own thread, and give the same
frequencies. The range coder still needs every code point's symbols in coding order (windows in
order, then positions, then sub-quantizers: token_coder.py), so at each code point the groups meet
(`Exchange`): the last to arrive codes the whole chunk's symbols there, windows in order, and every
group goes on with its own share. The bytes are the same whatever the split (tests/test_window_groups.py).

Threads only where they pay (`coder_threads`): where torch's thread budget allows them, on a CPU,
for chunks of several windows, and only while cores are idle. With every core busy, a group whose
thread is not running holds up every meeting: beside one busy process on two cores, encoding and
decoding with the coder on two threads took 1.1-1.2x their time on one (docs/experiments.md,
groups-28). So the count is decided for each chunk from the processes running at that moment
(cores.py: Linux's /proc/loadavg; one thread where that cannot be read). At most MAX_THREADS: each
group's thread runs the whole step loop, and its Python between operations holds the interpreter's
lock; more than two has not been measured.
"""
import contextlib
import threading

import numpy as np
import torch

from ..cores import idle_cores
from ..numerics import numerics_fence

MAX_THREADS = 2
MIN_WINDOWS = 2       # windows per group at least: a smaller batch is all per-operation overhead


def coder_threads(windows: int, budget: int, device: torch.device) -> int:
    """Threads for a chunk of `windows` windows: 1 on a GPU, and at most `budget` (torch's threads
    where the caller set them), MAX_THREADS, one per MIN_WINDOWS windows, and the cores no other
    process is running on."""
    if device.type != "cpu":
        return 1
    limit = min(budget, MAX_THREADS, windows // MIN_WINDOWS)
    if limit < 2:
        return 1
    idle = idle_cores()
    return 1 if idle is None else max(1, min(limit, idle))


def split(windows: int, groups: int) -> list[slice]:
    """`groups` contiguous slices of `windows` in order, as equal as they come."""
    bounds = [round(i * windows / groups) for i in range(groups + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


class Exchange:
    """Where the groups meet at each code point: `__call__(group, weights, sel, *point)` gives
    group `group`'s tables (m_g, K) and which of its positions are coded (sel (b_g, n)) and waits for
    every group; the last to arrive calls code(weights (m, K), sel (b, n), *point) on all groups'
    concatenated in group order (a code point's tables, then, in coding order) and each group gets
    its share of the symbols back (m_g,). The code points (step, positions, sub-quantizers) are the
    same for every group, which runs the same schedule."""

    def __init__(self, groups: int, code):
        self.code = code
        self.weights, self.sel, self.symbols = [None] * groups, [None] * groups, [None] * groups
        self.point = None
        self.barrier = threading.Barrier(groups, action=self._code)

    def _code(self):
        weights = np.concatenate(self.weights)
        symbols = self.code(weights, torch.cat(self.sel), *self.point)
        self.symbols = np.split(symbols, np.cumsum([len(w) for w in self.weights])[:-1])

    def close(self):
        """Drops what it holds: the barrier's action refers back to it (a cycle that only the garbage
        collector would free, holding `code` and the chunk's arrays it reaches until then)."""
        self.barrier = self.code = self.point = None
        self.weights = self.sel = self.symbols = []

    def __call__(self, group: int, weights: np.ndarray, sel: torch.Tensor, *point) -> np.ndarray:
        self.weights[group], self.sel[group] = weights, sel
        if group == 0:
            self.point = point
        self.barrier.wait()
        return self.symbols[group]


def run_groups(groups: list[slice], work, code):
    """work(rows, exchange) for each group of windows `rows`, group 0 on the calling thread and the
    others on threads of their own, each on one torch thread and under the caller's torch function
    modes (numerics.RoundedProducts, which emulates other machines' products, is one), meeting at
    every code point through an `Exchange` over `code`; -> [what work returned, group by group].
    An error of any group (a damaged file's, an interrupt's) is raised here once every thread has
    stopped, the one that broke the meeting rather than the others' BrokenBarrierError: a group
    that fails breaks it, and the others stop at their next code point."""
    exchange = Exchange(len(groups), code)
    modes = _function_modes()   # the helpers enter them: a mode holds for the thread that entered it
    results, errors, broken = [None] * len(groups), [], []

    def run(g, modes=()):
        try:
            with contextlib.ExitStack() as stack:
                for mode in modes:
                    stack.enter_context(mode)
                stack.enter_context(numerics_fence())
                results[g] = work(groups[g], lambda *args: exchange(g, *args))
        except threading.BrokenBarrierError as e:
            broken.append(e)
        except BaseException as e:  # noqa: B036 (KeyboardInterrupt too: every thread must stop)
            errors.append(e)
            exchange.barrier.abort()

    def helper(g):
        torch.set_num_threads(1)
        run(g, modes)
    threads = []
    try:
        for g in range(1, len(groups)):
            threads.append(threading.Thread(target=helper, args=(g,), daemon=True, name=f"pqcodec-windows-{g}"))
            threads[-1].start()
        run(0)
    except BaseException:  # a thread that did not start, a second interrupt: the others must not wait
        exchange.barrier.abort()
        raise
    finally:
        for t in threads:
            t.join()
        exchange.close()
    if errors or broken:
        raise (errors or broken)[0]
    return results


def _function_modes() -> list:
    """The calling thread's torch function modes, outermost first (a mode applies to the thread
    that entered it only)."""
    stack = getattr(torch.overrides, "_get_current_function_mode_stack", None)
    return list(stack()) if stack else []
