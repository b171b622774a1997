"""A quick slice of the fuzzer (eval/fuzz.py runs it long): mutated files through `decode` end in a
one-line PQCodecError or an image of the header's size, never another exception."""
import time

import pytest
from hypothesis import given, settings, strategies as st

from fuzzing import make_corpus, make_weights, mutate, outcome


@pytest.fixture(scope="module")
def fuzz_codec(tmp_path_factory):
    from pqcodec.zoo import load_custom_codec
    return load_custom_codec(str(make_weights(tmp_path_factory.mktemp("fuzz") / "tiny.safetensors")))


@pytest.fixture(scope="module")
def corpus(fuzz_codec):
    return make_corpus(fuzz_codec)


def test_fuzzed_files_fail_cleanly(fuzz_codec, corpus):
    valid_s = []
    for data in corpus:
        t0 = time.perf_counter()
        assert outcome(fuzz_codec, data) == "decoded"
        valid_s.append(time.perf_counter() - t0)
    # No damaged file costs far more than a valid one: a mutated header claims at most 127 x 127 px (the
    # corpus goes to 100 x 150), so its work is a valid file's, or less when it is refused early. The
    # limit is relative to the slowest valid decode measured here on this machine (~0.1 s on 2 cores),
    # with 5 s of slack for a pause of the machine: a slower machine raises both sides, a decoder that
    # loops on a damaged file exceeds it (a hang: the test's timeout, setup.cfg).
    limit = 5 + 50 * max(valid_s)
    seen = {}
    for seed in range(600):
        kind, data = mutate(corpus, seed)
        t0 = time.perf_counter()
        result = outcome(fuzz_codec, data)  # raises on anything but a clean error or a right-sized image
        took = time.perf_counter() - t0
        assert took < limit, (seed, kind, took, limit)
        seen.setdefault(kind, set()).add(result)
    assert len(seen) == 8 and all("error" in r for r in seen.values())


# no per-example deadline: Hypothesis's default (and the 5 s this had) fails a slow or busy machine; a
# decode that hangs fails the test's timeout (setup.cfg), and the test above bounds a damaged file's
# decoding time relative to a valid one's
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_hypothesis_bytes(fuzz_codec, corpus, data):
    """Hypothesis drives the bytes: arbitrary files, and valid files with arbitrary bytes overwritten,
    inserted or cut (it shrinks any failure to a minimal file)."""
    base = data.draw(st.sampled_from(corpus))
    kind = data.draw(st.sampled_from(["raw", "overwrite", "insert", "cut"]))
    if kind == "raw":
        blob = data.draw(st.binary(max_size=300))
    else:
        at = data.draw(st.integers(0, len(base)))
        chunk = data.draw(st.binary(min_size=1, max_size=8))
        blob = {"overwrite": base[:at] + chunk + base[at + len(chunk):], "insert": base[:at] + chunk + base[at:],
                "cut": base[:at] + base[at + len(chunk):]}[kind]
    outcome(fuzz_codec, blob)  # raises on anything but a clean error or a right-sized image
