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
    for data in corpus:
        assert outcome(fuzz_codec, data) == "decoded"
    seen = {}
    for seed in range(600):
        kind, data = mutate(corpus, seed)
        t0 = time.perf_counter()
        result = outcome(fuzz_codec, data)  # raises on anything but a clean error or a right-sized image
        assert time.perf_counter() - t0 < 5, (seed, kind)
        seen.setdefault(kind, set()).add(result)
    assert len(seen) == 8 and all("error" in r for r in seen.values())


@settings(max_examples=300, deadline=5000)
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
