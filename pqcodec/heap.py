"""Giving freed memory back to the operating system between the large steps of coding.

A tile's activations (tens of MB each) and a window chunk's attention cache are freed when the
step ends, but the C library keeps most freed blocks in its heap for reuse: the process's resident
memory then holds what the largest step ever needed plus the holes between blocks still in use,
and on a large image the steps' leftovers add up (24 MP: ~130 MB after the token coder alone).
`release_free_memory()` asks glibc to return the heap's free pages (malloc_trim); the coder calls it
after each tile and each window chunk (and at the end of a pass of several chunks), so peak memory
follows the live data (docs/cli.md, "Large images"). Nothing it does changes a value; where the C library has no malloc_trim (macOS, musl,
Windows) it does nothing. It costs well under a millisecond on a heap of a few hundred MB.
"""
import ctypes
import sys


def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim  # the process's own C library
    except (OSError, AttributeError):         # a C library without it (musl)
        return None


_TRIM = _malloc_trim()


def release_free_memory() -> bool:
    """Returns the free pages of the C library's heap to the system; False where it cannot."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
