"""Coding is fenced off from the caller's torch state: autocast, float32 matmul precision, the
default dtype and the thread count neither change the bytes nor are changed by a call, also with two
threads coding at once; and the decoding work is bounded by the file, not by the image its header claims."""
import threading
import time

import numpy as np
import pytest
import torch

from pqcodec import bitstream
from pqcodec.errors import CorruptFileError
from conftest import random_image

RGB = random_image(40, 72, seed=11)


@pytest.fixture(scope="module")
def reference(tiny_codec):
    return tiny_codec.encode(RGB, 2)


def test_autocast_changes_nothing(tiny_codec, reference):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert tiny_codec.encode(RGB, 2) == reference
        assert np.array_equal(tiny_codec.decode_tokens(reference)[1], tiny_codec.image_to_tokens(RGB, 2))
        assert torch.is_autocast_enabled("cpu")  # the caller's setting is still there inside its block


@pytest.mark.parametrize("precision", ["medium", "high"])
def test_matmul_precision_changes_nothing_and_is_kept(tiny_codec, reference, precision):
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        assert tiny_codec.encode(RGB, 2) == reference
        assert np.array_equal(tiny_codec.decode_tokens(reference)[1], tiny_codec.image_to_tokens(RGB, 2))
        assert torch.get_float32_matmul_precision() == precision
    finally:
        torch.set_float32_matmul_precision(before)


def test_thread_count_is_left_alone(tiny_codec, reference):
    before = torch.get_num_threads()
    seen = []
    stop = threading.Event()

    def watch():  # what another thread of the caller sees while coding runs
        while not stop.is_set():
            seen.append(torch.get_num_threads())
            time.sleep(0.001)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        tiny_codec.decode(tiny_codec.encode(RGB, 2))
    finally:
        stop.set()
        watcher.join()
    assert torch.get_num_threads() == before and set(seen) <= {before}


def test_two_threads_coding_at_once(tiny_codec, reference):
    results, errors = {}, []

    def work(i):
        try:
            rgb = random_image(40 + 8 * i, 72, seed=i)
            data = tiny_codec.encode(rgb, 2)
            results[i] = (data, np.array_equal(tiny_codec.decode_tokens(data)[1], tiny_codec.image_to_tokens(rgb, 2)))
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(ok for _, ok in results.values())
    assert results[0][0] == tiny_codec.encode(random_image(40, 72, seed=0), 2)


def test_forged_header_fails_after_one_chunk(tiny_codec, monkeypatch):
    """A header claiming a large image over a tiny payload is refused at the check after the first
    chunk of windows, not after coding the whole grid it claims."""
    side = 16 * tiny_codec.config.window * tiny_codec.config.stride  # 16 x 16 windows: 8 chunks of 32
    header = bitstream.Header(tiny_codec.model_hash, 1, 4, side, side, False, 0)
    forged = bitstream.pack(header, bytes(range(40)))
    predicted = []   # windows per call: the chunk's, or a group's where the coder runs on threads
    monkeypatch.setattr(tiny_codec.model.int_prior, "predict",
                        lambda cache, *a, p=tiny_codec.model.int_prior.predict: (predicted.append(cache.mask.shape[0]),
                                                                                 p(cache, *a))[1])
    with pytest.raises(CorruptFileError, match="chunk 1 of 8"):
        tiny_codec.decode(forged)
    assert sum(predicted) <= 32 * 4  # one chunk of 32 windows, 4 steps


def test_default_dtype_changes_nothing(tiny_codec, reference):
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert tiny_codec.encode(RGB, 2) == reference
        assert np.array_equal(tiny_codec.decode_tokens(reference)[1], tiny_codec.image_to_tokens(RGB, 2))
    finally:
        torch.set_default_dtype(before)


def test_one_thread_sets_the_callers_count_and_puts_it_back():
    from pqcodec.numerics import one_thread
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with one_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError):
            with one_thread():
                raise RuntimeError("an error inside")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_int8_choice_ignores_the_wall_clock(monkeypatch):
    """A wall clock that leaps between readings (another process took the core) changes nothing:
    the probe times the thread's CPU time."""
    from pqcodec.coding import kernels
    kernels.int8_products.cache_clear()
    chosen = kernels.int8_products()
    leaps = iter(range(0, 10 ** 9, 1000))
    monkeypatch.setattr(time, "perf_counter", lambda: float(next(leaps)))
    monkeypatch.setattr(time, "monotonic", lambda: float(next(leaps)))
    try:
        kernels.int8_products.cache_clear()
        assert kernels.int8_products() == chosen
    finally:
        monkeypatch.undo()
        kernels.int8_products.cache_clear()
