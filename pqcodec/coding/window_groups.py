"""A chunk's windows split among threads: the prior's work of each group of windows on a thread of
its own, the range coder's in coding order on one.

The integer prior's integers do not depend on which windows share a batch (integer_prior.py), so a
chunk's windows can go through it in groups, each group's on its own thread, and give the same
frequencies. The range coder still needs every code point's symbols in coding order (windows in
order, then positions, then sub-quantizers: token_coder.py), so at each code point the groups meet
(`Exchange`): the last to arrive codes the whole chunk's symbols there, windows in order, and every
group goes on with its own share. Where the coder codes any group's share of a code point on its own
(the plain encoder and decoder: each symbol's code depends on its table and on the symbols before it
in the stream alone), the groups do not meet (`Stream`): each hands its share over, and the shares
are coded in the file's order (code points, then groups) as soon as each is there, by whichever
thread brought the last one needed. A decoder's group waits until its own share is decoded, which
needs the shares before it in the file but not the later groups' of the same point; an encoder's
group, which knows its symbols (the true indices), does not wait at all. RDOQ's choices and a
generated file's draws take whole code points: they meet. The bytes are the same whatever the
split (tests/test_window_groups.py).

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
MAX_LEAD = 8          # code points a group that knows its symbols may hand over ahead of the slowest
                      # (`Stream`): bounds the tables held (at 24 MP, about 0.7 MB a point and group)


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

    def abort(self):
        """Every group waiting, and every group that comes, raises BrokenBarrierError."""
        self.barrier.abort()

    def __call__(self, group: int, weights: np.ndarray, sel: torch.Tensor, *point) -> np.ndarray:
        self.weights[group], self.sel[group] = weights, sel
        if group == 0:
            self.point = point
        self.barrier.wait()
        return self.symbols[group]


class Stream:
    """Where the groups hand their shares of each code point over, without meeting:
    `__call__(group, weights, sel, *point)` hands group `group`'s tables (m_g, K) and which of its
    positions are coded (sel (b_g, n)) over, and returns its symbols (m_g,). The shares are coded in
    the file's order, code points then groups, each as soon as it and every share before it are
    there (by the thread that brought the last one needed): code(weights, sel, *point) gets the
    tables of one or more consecutive groups' shares of a point (all that are there), with sel (b, n)
    over the chunk's windows, False outside those groups', and returns their symbols. So `code` must
    code part of a point's rows as it would the whole point's, in order (the plain range encoder and
    decoder do). A group waits for its own symbols only; where own(group, weights, sel, *point)
    gives them without the coder (the encoder's true indices), it does not wait (but for a group
    MAX_LEAD points behind it, which bounds the tables held)."""

    def __init__(self, groups: list[slice], code, own=None):
        self.groups, self.code, self.own = groups, code, own
        self.windows = groups[-1].stop
        self.shares: dict[int, tuple] = {}    # share index (point x groups + group) -> (weights, sel, point)
        self.symbols: dict[int, np.ndarray] = {}  # coded shares' symbols, until their group takes them
        self.handed = [0] * len(groups)       # points each group has handed over
        self.coded = 0                        # shares coded, in order
        self.broken = False
        self.lock = threading.Condition()

    def close(self):
        self.code = self.own = None
        self.shares, self.symbols = {}, {}

    def abort(self):
        """Every group waiting, and every group that comes, raises BrokenBarrierError."""
        with self.lock:
            self.broken = True
            self.lock.notify_all()

    def _wait(self, ready):
        self.lock.wait_for(lambda: self.broken or ready())
        if self.broken:
            raise threading.BrokenBarrierError

    def __call__(self, group: int, weights: np.ndarray, sel: torch.Tensor, *point) -> np.ndarray:
        count = len(self.groups)
        with self.lock:
            if self.broken:                       # another group failed: nothing more is coded
                raise threading.BrokenBarrierError
            k = self.handed[group]
            if self.own is not None:
                self._wait(lambda: k - self.coded // count < MAX_LEAD)
            share = k * count + group
            self.shares[share] = (weights, sel, point)
            self.handed[group] = k + 1
            while not self.broken and self.coded in self.shares:   # coded in the lock: in order, one call at a time
                ready = []                        # the next shares there, up to the end of their point
                while self.coded in self.shares and (not ready or self.coded % count):
                    ready.append((self.coded, *self.shares.pop(self.coded)))
                    self.coded += 1
                chunk_sel = torch.zeros((self.windows, ready[0][2].shape[1]), dtype=torch.bool, device=sel.device)
                for i, _, s, _ in ready:
                    chunk_sel[self.groups[i % count]] = s
                try:
                    symbols = self.code(np.concatenate([w for _, w, _, _ in ready]), chunk_sel, *ready[0][3])
                except BaseException:
                    self.broken = True        # nothing is coded after a share that failed
                    self.lock.notify_all()
                    raise
                if self.own is None:
                    parts = np.split(symbols, np.cumsum([len(w) for _, w, _, _ in ready])[:-1])
                    self.symbols.update((i, part) for (i, *_), part in zip(ready, parts))
            self.lock.notify_all()
            if self.own is None:
                self._wait(lambda: share in self.symbols)
                return self.symbols.pop(share)
        return self.own(group, weights, sel, *point)


def run_groups(groups: list[slice], work, code, by_share: bool = False, own=None):
    """work(rows, exchange) for each group of windows `rows`, group 0 on the calling thread and the
    others on threads of their own, each on one torch thread and under the caller's torch function
    modes (numerics.RoundedProducts, which emulates other machines' products, is one), meeting at
    every code point through an `Exchange` over `code`, or, by_share (`code` codes any group's share
    of a point on its own), handing their shares over through a `Stream`, with own(rows, weights,
    sel, *point) where it gives a group's symbols without the coder; -> [what work returned, group by
    group].
    An error of any group (a damaged file's, an interrupt's) is raised here once every thread has
    stopped, the one that broke the meeting rather than the others' BrokenBarrierError: a group
    that fails breaks it, and the others stop at their next code point."""
    if by_share:
        exchange = Stream(groups, code, None if own is None else lambda g, *args: own(groups[g], *args))
    else:
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
            exchange.abort()

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
        exchange.abort()
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
