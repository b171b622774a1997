"""Which kernel computes the integer prior's matrix products on this machine: float32 (always
exact, coding/integer_prior.py) or an int8 kernel that is faster here and gives the same int64 sums
on worst-case operands. The choice changes speed only, never an integer: a file is the same bytes
whichever kernel wrote it.
"""
import functools
import os
import time

import torch
import torch.nn.functional as F

from ..numerics import one_thread

ACT = 127                 # |matmul operand| <= ACT (int8)
WEIGHT_MAX = 63           # |weight| <= WEIGHT_MAX: int8 pair sums stay below 2^15 (integer_prior.py)


def _int8_is_faster(kernel: str, g: torch.Generator, rows: int, inner: int, out: int, margin: float) -> float | None:
    """The time of `kernel`'s int8 product of this shape (best of 3) where it beats float32's by
    `margin`; None where it does not. Times are the calling thread's CPU time, on one thread (as the
    coder runs them): what another process takes of the machine does not change the choice."""
    w = torch.randint(-WEIGHT_MAX, WEIGHT_MAX + 1, (out, inner), generator=g, dtype=torch.int8)
    x = torch.randint(-ACT, ACT + 1, (rows, inner), generator=g, dtype=torch.int8)
    pack, xf, wf = int8_pack(w, kernel), x.float(), w.float()

    def best(f):
        f()
        times = []
        for _ in range(3):
            t = time.thread_time()
            f()
            times.append(time.thread_time() - t)
        return min(times)
    t = best(lambda: int8_linear(x, pack, None))
    return t if t * margin < best(lambda: F.linear(xf, wf)) else None


def _int8_is_exact(kernel: str, g: torch.Generator) -> bool:
    """Whether `kernel` gives exactly the int64 sums on worst-case operands: the largest sums, and
    the largest pair sums of CPUs without VNNI (which a saturating kernel gets wrong), in shapes
    from a single row to the coder's own (a kernel may take another path for large products)."""
    for rows, inner, out in ((1, 1024, 32), (37, 256, 96), (300, 1024, 16), (600, 256, 1024)):
        w = torch.randint(-WEIGHT_MAX, WEIGHT_MAX + 1, (out, inner), generator=g, dtype=torch.int8)
        w[0], w[1] = WEIGHT_MAX, -WEIGHT_MAX
        x = torch.randint(-ACT, ACT + 1, (rows, inner), generator=g, dtype=torch.int8)
        x[0] = ACT * torch.sign(w[0].float()).to(torch.int8)
        x[-1] = -ACT
        bias = torch.randint(-1000, 1000, (out,), generator=g, dtype=torch.int32)
        got = int8_linear(x, int8_pack(w, kernel), bias)
        if not torch.equal(got.double(), x.double() @ w.double().t() + bias.double()):
            return False
    return True


INT8_KERNELS = ("int_mm", "onednn")   # torch._int_mm; oneDNN's quantized linear


@functools.cache
def int8_products() -> str | None:
    """Which int8 kernel this process computes the integer prior's products with, or None for
    float32 products (just as exact). A kernel is taken only if it exists in this build, is faster
    than float32 here, and gives exactly the int64 sums on worst-case operands, which rules out any
    kernel that saturates; of those, the fastest. Speed is checked because it is not a given: on an
    Intel CPU with AMX oneDNN's int8 linear of 504 x 256 x 1024 took 0.20 ms against float32's
    1.44 ms; on an AMD EPYC (AVX-512 VNNI, torch 2.13) it took a reference path, 700 times slower
    than float32 (experiments.md, probe-int8-amd), while torch._int_mm there is 4 times faster than
    float32 (int-mm). A tiny probe first, so a slow kernel is known in a millisecond. Timed in the
    thread's CPU time on one thread, so a busy machine does not turn the int8 products off.
    PQCODEC_INT8=0 in the environment turns the int8 products off."""
    if os.environ.get("PQCODEC_INT8", "1") == "0":
        return None
    fastest, best_time = None, float("inf")
    with one_thread():
        for kernel in INT8_KERNELS:
            try:
                g = torch.Generator().manual_seed(0)
                if _int8_is_faster(kernel, g, 4, 256, 64, 0.25) is None:
                    continue
                t = _int8_is_faster(kernel, g, 128, 256, 1024, 1.25)
                if t is not None and t < best_time and _int8_is_exact(kernel, g):
                    fastest, best_time = kernel, t
            except (RuntimeError, AttributeError, NotImplementedError):  # not in this build
                continue
    return fastest


def int8_pack(w: torch.Tensor, kernel: str) -> dict:
    """int8 weights (out, in) packed for `int8_linear` with `kernel`."""
    if kernel == "int_mm":
        return dict(kernel=kernel, wt=w.t().contiguous())                          # (in, out)
    return dict(kernel=kernel, packed=torch.ops.onednn.qlinear_prepack(w.contiguous(), None),
                ones=torch.ones(w.shape[0]), zeros=torch.zeros(w.shape[0], dtype=torch.int64))


def int8_linear(x: torch.Tensor, pack: dict, bias: torch.Tensor | None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """x (..., in) int8 @ W^T (+ bias, int32), as `dtype` (float32, float64 or int32): the int32
    sums (with oneDNN: unit scales and zero points), exact below 2^24."""
    x2 = x.reshape(-1, x.shape[-1])
    if pack["kernel"] == "int_mm":
        y = torch._int_mm(x2, pack["wt"])
        if bias is not None:
            y += bias
        y = y.to(dtype)
    else:
        y = torch.ops.onednn.qlinear_pointwise(x2, 1.0, 0, pack["packed"], pack["ones"], pack["zeros"],
                                               None if bias is None else bias.float(),
                                               1.0, 0, torch.float32, "none", [], "").to(dtype)
    return y.view(*x.shape[:-1], y.shape[-1])
