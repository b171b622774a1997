"""A chunk's windows split among threads: the prior's work of each group of windows on a thread of
its own, the range coder's in coding order on one.

The integer prior's integers do not depend on which windows share a batch (integer_prior.py), so a
chunk's windows can go through it in groups, each group's on its own thread, and give the same
frequencies. The range coder still needs every code point's symbols in coding order (windows in
order, then positions, then sub-quantizers: token_coder.py), so each group hands its share of every
code point over (`Stream`), and the shares are coded in the file's order (code points, then groups)
by whichever thread brought the last one needed; every group goes on with its own symbols. Where the
coder codes part of a point on its own (the plain encoder and decoder: each symbol's code depends on
its table and on the symbols before it in the stream alone), a share is coded as soon as it and
those before it are there: a decoder's group waits until its own share is decoded, which needs the
shares before it in the file but not the later groups' of the same point, and an encoder's group,
which knows its symbols (the true indices), does not wait at all. RDOQ's choices and a generated
file's draws take whole code points: there the groups meet, every point coded once all its shares
are in. The bytes are the same whatever the split (tests/test_window_groups.py).

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
MAX_LEAD = 8          # code points a group that knows its symbols may hand over ahead of the slowest:
                      # bounds the tables held (at 24 MP, about 0.7 MB a point and group)


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


class Stream:
    """Where the groups hand their shares of each code point over: `__call__(group, weights, sel,
    *point)` hands group `group`'s tables (m_g, K) and which of its positions are coded (sel
    (b_g, n)) over, and returns its symbols (m_g,). The shares are coded in the file's order, code
    points then groups, by the thread that brought the last one needed: code(weights, sel, *point)
    gets the tables of one or more consecutive groups' shares of a point, with sel (b, n) over the
    chunk's windows, False outside those groups', and returns their symbols. by_share: a share is
    coded as soon as it and every share before it are there (`code` must code part of a point's
    rows as it would the whole point's, in order, as the plain range encoder and decoder do); else
    only whole points, once all their shares are there (the groups meet). A group waits for its own
    symbols only; where own(group, weights, sel, *point) gives them without the coder (the
    encoder's true indices; by_share only), it does not wait (but for a group MAX_LEAD points behind
    it, which bounds the tables held)."""

    def __init__(self, groups: list[slice], code, by_share: bool = False, own=None):
        self.groups, self.code, self.by_share, self.own = groups, code, by_share, own
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

    def _ready(self) -> bool:
        """Whether the next share in the file's order can be coded: it is there, and by_share or
        every share of its point is."""
        count = len(self.groups)
        first = self.coded - self.coded % count
        return self.coded in self.shares and (self.by_share or all(i in self.shares for i in range(first, first + count)))

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
            while not self.broken and self._ready():   # coded in the lock: in order, one call at a time
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
    modes (numerics.RoundedProducts, which emulates other machines' products, is one), handing their
    shares of every code point over through a `Stream` over `code` (by_share: `code` codes any part
    of a point on its own; own(rows, weights, sel, *point): a group's symbols without the coder);
    -> [what work returned, group by group].
    An error of any group (a damaged file's, an interrupt's) is raised here once every thread has
    stopped, the one that broke the stream rather than the others' BrokenBarrierError: a group
    that fails breaks it, and the others stop at their next code point."""
    exchange = Stream(groups, code, by_share, None if own is None else lambda g, *args: own(groups[g], *args))
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
