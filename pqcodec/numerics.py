"""Float products on machines we do not have: what a caller's float settings or another device may
do to the integer prior's products, emulated on any CPU.

The integer prior (coding/integer_prior.py) carries integers in float tensors and relies on every
product of them being exact. Some machines round a float32 product's inputs first:
- `torch.set_float32_matmul_precision("medium")` lets a CPU with bf16 units (e.g. Intel AMX) or a GPU
  compute float32 matrix products from bfloat16 inputs: 8 significant bits;
- "high", and CUDA's TF32 setting (`torch.backends.cuda.matmul.allow_tf32`), from TF32 inputs:
  11 significant bits.
An integer survives that rounding only if it fits in those bits: |x| <= OPERAND_EXACT = 256 always
does (an 8-bit magnitude, or 2^8), 257 does not in bf16. The sums themselves are accumulated in
float32 on every such machine and stay exact below 2^24. So the integer prior's float32 products
take operands of magnitude <= OPERAND_EXACT only; wider operands use float64 products, which no
precision setting touches (`IntLinear`).

`RoundedProducts` is the test of that rule on any machine: a torch function mode that rounds the
float32 inputs of every matrix product to `bits` significant bits, as such a machine would, so a
test can require the same bytes with and without it (tests/test_numerics.py, eval/portability.py).
"""
import contextlib

import torch
from torch.overrides import TorchFunctionMode

OPERAND_EXACT = 256   # |integer| <= this keeps its value in bf16 (8 significant bits) and TF32 (11)
BF16_BITS, TF32_BITS = 8, 11
F = torch.nn.functional
_PRODUCTS = {F.linear, F.bilinear, torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__,
             torch.Tensor.__rmatmul__, torch.mm, torch.Tensor.mm, torch.bmm, torch.Tensor.bmm, torch.addmm,
             torch.Tensor.addmm, torch.baddbmm, torch.Tensor.baddbmm, torch.addbmm, torch.mv, torch.Tensor.mv,
             torch.dot, torch.Tensor.dot, torch.inner, torch.einsum, torch.tensordot, torch.linalg.vecdot,
             torch.linalg.matmul, torch.chain_matmul, torch.linalg.multi_dot}


def round_significand(x: torch.Tensor, bits: int) -> torch.Tensor:
    """float32 x rounded to `bits` significant bits (the implicit one included), to nearest, ties to
    even: bits=8 is bfloat16, bits=11 TF32. Other dtypes are returned as they are."""
    if x.dtype != torch.float32:
        return x
    drop = 24 - bits
    i = x.view(torch.int32).to(torch.int64)
    half, low = 1 << (drop - 1), (1 << drop) - 1
    odd = (i >> drop) & 1
    i = (i + half - 1 + odd) & ~low                # round to nearest, ties to even (finite values)
    return i.to(torch.int32).view(torch.float32)


class RoundedProducts(TorchFunctionMode):
    """Within `with RoundedProducts(bits):` every matrix product (F.linear, @, matmul, bmm, addmm,
    einsum, ...) gets its float32 tensor inputs rounded to `bits` significant bits first; float64
    and integer inputs are left as they are. `calls` counts the products rounded."""

    def __init__(self, bits: int):
        super().__init__()
        self.bits, self.calls = bits, 0

    def _round(self, a):
        if isinstance(a, torch.Tensor) and a.dtype == torch.float32:
            self.calls += 1
            return round_significand(a, self.bits)
        if isinstance(a, (list, tuple)):
            return type(a)(self._round(b) for b in a)
        return a

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _PRODUCTS:
            args = tuple(self._round(a) for a in args)
            kwargs = {k: self._round(v) for k, v in kwargs.items()}
        return func(*args, **kwargs)


@contextlib.contextmanager
def float32_default():
    """Modules built inside get float32 weights whatever `torch.set_default_dtype` the caller chose:
    the networks and the coder are float32 by design, and a model built in float64 would not even
    encode (a float32 image into float64 convolutions). The default dtype is process-wide, so it is
    set for the construction only and then put back."""
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        yield
    finally:
        torch.set_default_dtype(saved)


@contextlib.contextmanager
def numerics_fence():
    """What coding needs whatever the caller set: no autocast (thread-local, so safe beside other
    threads), no autograd. The integer prior is exact under any matmul precision (its float32
    products take operands that bf16 and TF32 keep exactly, above) and thread count, so no
    process-wide setting is touched (the token coder's `one_thread` sets the calling thread's own
    count, and puts it back)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode())
        stack.enter_context(torch.autocast("cpu", enabled=False))
        if torch.cuda.is_available():
            stack.enter_context(torch.autocast("cuda", enabled=False))
        yield


@contextlib.contextmanager
def torch_threads(count: int):
    """torch's intra-op threads set to `count` for the calling thread, and put back after, however
    the work ends. Other threads keep their counts; one that first uses torch meanwhile starts with
    `count` (torch gives a new thread the count set last), and sets its own where it needs more."""
    saved = torch.get_num_threads()
    if count == saved:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def one_thread():
    """`torch_threads(1)` for the token coder's loop: thousands of small operations, each a parallel
    region. With two threads it runs a fifth faster on an idle machine, and five to seven times
    slower when another process holds a core, as every region waits for a thread that is not running
    (docs/cli.md, "Speed on a busy machine"). The integers, and so the files, are the same at any
    thread count."""
    return torch_threads(1)
