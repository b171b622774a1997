"""A quick slice of the fuzzer (eval/fuzz.py runs it long): mutated files through `decode` end in a
one-line PQCodecError or an image of the header's size, never another exception."""
import time

import pytest

from fuzzing import make_corpus, make_weights, mutate, outcome


@pytest.fixture(scope="module")
def fuzz_codec(tmp_path_factory):
    from pqcodec.zoo import load_custom_codec
    return load_custom_codec(str(make_weights(tmp_path_factory.mktemp("fuzz") / "tiny.safetensors")))


def test_fuzzed_files_fail_cleanly(fuzz_codec):
    corpus = make_corpus(fuzz_codec)
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
