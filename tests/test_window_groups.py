"""A chunk's windows on several threads (pqcodec/coding/window_groups.py): the same bytes and the
same tokens at any thread count, in every kind of file (plain, RDOQ, conditional, mapped,
generated, partial windows at the edges); other machines' products are emulated on every thread; a
damaged file's error and an interrupt come out of the threads and none is left running; the count
follows the budget, the device and the idle cores (tests/test_cores.py)."""
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import random_image
from pqcodec.bitstream import Generated
from pqcodec.coding import entropy, window_groups
from pqcodec.numerics import RoundedProducts
from pqcodec.errors import CorruptFileError
from test_conditional import cond_codec, cond_weights  # noqa: F401 (fixtures)

IMG = random_image(90, 75, seed=4)   # the tiny model's windows are 32 px: 3 x 3, partial at two edges


def _at_threads(codec, monkeypatch, threads, make):
    monkeypatch.setattr(codec.token_coder, "threads", threads)
    return make()


@pytest.mark.parametrize("kind", ["plain", "rdoq", "mapped", "generated"])
def test_files_and_tokens_are_the_same_at_any_thread_count(tiny_codec, monkeypatch, kind):
    def make():
        if kind == "plain":
            data = tiny_codec.encode(IMG, 2)
        elif kind == "rdoq":
            data = tiny_codec.encode(IMG, 2, rd_lambda=0.5)
        elif kind == "mapped":
            counts = np.ones((3, 3), dtype=np.int64)
            counts[1:, :2] = 2
            data = tiny_codec.encode_mapped(tiny_codec.image_to_tokens(IMG, 2), counts, IMG.shape[:2], False, 12)[0]
        else:
            tokens = tiny_codec.image_to_tokens(np.asarray(Image.fromarray(IMG).resize((72, 40))), 2)
            data = tiny_codec.encode_generated(tokens, IMG.shape[:2], False, 12, Generated(5, 9, 4, 1, 7))[0]
        return data, tiny_codec.decode_tokens(data)[1]
    one = _at_threads(tiny_codec, monkeypatch, 1, make)
    for threads in (2, 3):
        data, tokens = _at_threads(tiny_codec, monkeypatch, threads, make)
        assert data == one[0] and np.array_equal(tokens, one[1])


def test_a_conditional_models_files_are_the_same_at_any_thread_count(cond_codec, monkeypatch):  # noqa: F811
    img = random_image(37, 45, seed=2)   # 2 x 2 windows, three of them partial: groups with nothing to code
    ran = []
    run_groups = window_groups.run_groups
    monkeypatch.setattr(window_groups, "run_groups", lambda groups, *a: ran.append(len(groups)) or run_groups(groups, *a))
    one = _at_threads(cond_codec, monkeypatch, 1, lambda: cond_codec.encode(img, 3))
    tokens = _at_threads(cond_codec, monkeypatch, 1, lambda: cond_codec.decode_tokens(one)[1])
    assert ran == []
    for threads in (2, 4):
        assert _at_threads(cond_codec, monkeypatch, threads, lambda: cond_codec.encode(img, 3)) == one
        assert np.array_equal(_at_threads(cond_codec, monkeypatch, threads, lambda: cond_codec.decode_tokens(one)[1]),
                              tokens)
    assert ran == [2, 2, 4, 4]


def test_other_machines_products_are_emulated_on_every_thread(tiny_codec, monkeypatch):
    """numerics.RoundedProducts (a torch function mode, which holds for the thread that entered it)
    reaches the helper threads: their products are rounded too."""
    names = set()

    class Seen(RoundedProducts):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            names.add(threading.current_thread().name)
            return super().__torch_function__(func, types, args, kwargs)
    monkeypatch.setattr(tiny_codec.token_coder, "threads", 2)
    with Seen(8):
        tiny_codec.token_coder.compress(tiny_codec.image_to_tokens(IMG, 2), 12)
    assert threading.current_thread().name in names and "pqcodec-windows-1" in names


@pytest.mark.parametrize("at", [-6, 40])
def test_a_damaged_file_is_refused_on_threads_and_leaves_none_running(tiny_codec, monkeypatch, at):
    monkeypatch.setattr(tiny_codec.token_coder, "threads", 3)
    data = bytearray(tiny_codec.encode(IMG, 2))
    data[at] ^= 0xFF   # the payload's end, or its start (the header is shorter than 40 bytes)
    before = threading.active_count()
    with pytest.raises(CorruptFileError):
        tiny_codec.decode(bytes(data))
    assert threading.active_count() == before


def test_the_range_decoders_error_on_a_thread_is_the_one_raised(tiny_codec, monkeypatch):
    """The range decoder fails (as on a payload that cannot be a valid encoding) at its fifth code
    point, inside the threads' meeting: that error comes out, and no thread is left."""
    decode = entropy.RangeDecoder.decode
    calls = []

    def failing(self, weights):
        calls.append(threading.current_thread().name)
        if len(calls) == 5:
            raise CorruptFileError("payload does not decode (test)")
        return decode(self, weights)
    data = tiny_codec.encode(IMG, 2)
    monkeypatch.setattr(tiny_codec.token_coder, "threads", 3)
    monkeypatch.setattr(entropy.RangeDecoder, "decode", failing)
    before = threading.active_count()
    with pytest.raises(CorruptFileError, match="test"):
        tiny_codec.decode(data)
    assert len(calls) == 5 and threading.active_count() == before


@pytest.mark.parametrize("by_share", [False, True])
def test_an_error_while_coding_a_meeting_stops_every_thread(by_share):
    """The range coder's error (a damaged file's) is raised on whichever thread codes (the last to
    arrive at a meeting, or the one that brought a share)."""
    calls = []

    def code(weights, sel):
        calls.append(1)
        if len(calls) == 2:
            raise CorruptFileError("damaged")
        return np.zeros(len(weights), dtype=np.int64)

    def work(rows, exchange):
        for _ in range(5):
            exchange(np.zeros((1, 4)), torch.ones(1, 1, dtype=torch.bool))
    before = threading.active_count()
    with pytest.raises(CorruptFileError, match="damaged"):
        window_groups.run_groups(window_groups.split(3, 3), work, code, by_share)
    assert len(calls) == 2 and threading.active_count() == before


@pytest.mark.parametrize("by_share", [False, True])
@pytest.mark.parametrize("failing", [0, 1])
def test_an_error_in_any_group_stops_every_thread(failing, by_share):
    """Group `failing` raises KeyboardInterrupt at its third code point (group 0 runs on the calling
    thread, where Ctrl-C lands); the other stops at its next one instead of waiting for ever."""
    points = [0, 0]

    def work(rows, exchange):
        g = rows.start
        for _ in range(10):
            points[g] += 1
            if g == failing and points[g] == 3:
                raise KeyboardInterrupt
            exchange(np.zeros((1, 4)), torch.ones(1, 1, dtype=torch.bool))
        return g
    before = threading.active_count()
    with pytest.raises(KeyboardInterrupt):
        window_groups.run_groups([slice(0, 1), slice(1, 2)], work, lambda w, sel: np.zeros(len(w), dtype=np.int64),
                                 by_share)
    # the other thread stopped at its next code point (it may have been woken from the third
    # meeting or not when the meeting broke; handing shares over, group 0 may be a point ahead of
    # group 1, whose share it waits for only at the next point, and group 1 up to a point behind):
    # it did not wait for ever
    assert points[1 - failing] in ((1, 2, 3, 4) if by_share else (2, 3)) and threading.active_count() == before


def test_the_groups_meet_in_window_order():
    seen = []

    def code(weights, sel):
        seen.append(weights[:, 0].tolist())
        return weights[:, 0].astype(np.int64) * 10

    def work(rows, exchange):
        ids = np.arange(rows.start, rows.stop, dtype=np.float64)
        return [exchange(np.stack([ids + step, ids]).T, torch.ones(len(ids), 1, dtype=torch.bool)).tolist()
                for step in (0, 100)]
    out = window_groups.run_groups(window_groups.split(7, 3), work, code)
    assert seen == [[0, 1, 2, 3, 4, 5, 6], [100, 101, 102, 103, 104, 105, 106]]
    assert [o[0] for o in out] == [[0, 10], [20, 30, 40], [50, 60]]


def test_shares_are_coded_in_the_files_order_and_each_group_gets_its_own():
    """Handing shares over (the decoder's way): `code` gets the shares in the file's order, code
    points then groups, with sel over the chunk's windows (True at the rows of the shares it gets),
    and each group gets back the symbols of its own share."""
    seen = []

    def code(weights, sel):
        assert weights[:, 1].tolist() == sel[:, 0].nonzero()[:, 0].tolist()   # each row's window
        seen.extend(weights[:, 0].tolist())
        return weights[:, 0].astype(np.int64) * 10

    def work(rows, exchange):
        ids = np.arange(rows.start, rows.stop, dtype=np.float64)
        return [exchange(np.stack([ids + step, ids]).T, torch.ones(len(ids), 1, dtype=torch.bool)).tolist()
                for step in (0, 100)]
    out = window_groups.run_groups(window_groups.split(5, 2), work, code, True)
    assert seen == [0, 1, 2, 3, 4, 100, 101, 102, 103, 104]
    assert out == [[[0, 10], [1000, 1010]], [[20, 30, 40], [1020, 1030, 1040]]]


def test_groups_that_know_their_symbols_do_not_wait_but_within_the_lead():
    """The encoder's way (`own`): group 0 hands MAX_LEAD code points over before group 1 has begun
    (were it waiting for group 1, group 1 would never begin: it waits for that), then waits for
    group 1 to hand over its first; every share is coded in order all the same."""
    lead = window_groups.MAX_LEAD
    began, log, coded = threading.Event(), [], []

    def work(rows, exchange):
        g = rows.start
        if g == 1:
            assert began.wait(10), "group 0 waited for group 1"
            log.append("group 1 begins")
        for k in range(lead + 2):
            exchange(np.full((1, 4), float(k)), torch.ones(1, 1, dtype=torch.bool))
            if g == 0:
                log.append(k)
                if k + 1 == lead:
                    began.set()
        return g

    def code(weights, sel):
        coded.extend(zip(weights[:, 0].astype(int).tolist(), sel[:, 0].nonzero()[:, 0].tolist()))
        return np.zeros(len(weights), dtype=np.int64)
    own = lambda rows, weights, sel: np.full(len(weights), rows.start)  # noqa: E731
    assert window_groups.run_groups([slice(0, 1), slice(1, 2)], work, code, True, own) == [0, 1]
    assert log.index(lead - 1) < log.index("group 1 begins") < log.index(lead)
    assert coded == [(k, g) for k in range(lead + 2) for g in (0, 1)]


def test_thread_count_follows_budget_device_windows_and_idle_cores(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(window_groups, "idle_cores", lambda: 2)
    assert window_groups.coder_threads(32, 4, cpu) == window_groups.MAX_THREADS == 2
    assert window_groups.coder_threads(32, 1, cpu) == 1                     # torch's budget
    assert window_groups.coder_threads(3, 4, cpu) == 1                      # one window a group: not worth it
    assert window_groups.coder_threads(32, 4, torch.device("meta")) == 1    # not a CPU
    monkeypatch.setattr(window_groups, "idle_cores", lambda: 1)
    assert window_groups.coder_threads(32, 4, cpu) == 1                     # another process runs
    monkeypatch.setattr(window_groups, "idle_cores", lambda: None)
    assert window_groups.coder_threads(32, 4, cpu) == 1                     # unknown
