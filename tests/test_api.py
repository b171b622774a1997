"""The Python API as a stranger calls it: every reasonable source is taken (paths, bytes-likes, file
objects, for encode and decode alike), anything else is a one-line InputTypeError saying what is
expected, errors name their source, quality and steps are whole numbers, and a weights file's
config is read strictly."""
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import pqcodec
from pqcodec import bitstream
from pqcodec.errors import CorruptFileError, ImageError, InputTypeError, PQCodecError, UnsupportedFileError
from pqcodec.model import ModelConfig
from pqcodec.zoo import DEFAULT_MODEL, ZOO, models_dir
from conftest import TINY, random_image

RGB = random_image(20, 28, seed=5)


def _png(rgb: np.ndarray = RGB) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


def _one_line(error: BaseException) -> str:
    message = str(error)
    assert message and "\n" not in message, message
    return message


@pytest.fixture(scope="module")
def coded(tiny_codec) -> bytes:
    return tiny_codec.encode(RGB, 2)


# -- image sources ------------------------------------------------------------------------------------
def test_every_reasonable_image_source_codes_the_same_image(tiny_weights, tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(_png())
    expected = pqcodec.encode(RGB, 2, model=tiny_weights)
    written = io.BytesIO()
    Image.fromarray(RGB).save(written, "PNG")  # left at its end: read from its start, as Pillow does
    with open(path, "rb") as f:
        sources = [str(path), path, _png(), bytearray(_png()), memoryview(_png()), f, written,
                   Image.fromarray(RGB), Image.open(path)]
        for source in sources:
            assert pqcodec.encode(source, 2, model=tiny_weights) == expected, type(source)


@pytest.mark.parametrize("source, expected", [
    (None, "NoneType"), ([[1, 2], [3, 4]], "list"), (3, "int"), (torch.zeros(3, 8, 8), "torch.Tensor"),
    (io.StringIO("text"), "_io.StringIO"),
])
def test_other_image_sources_are_a_one_line_type_error_saying_what_is_expected(tiny_weights, source, expected):
    """The bug: AttributeError "... has no attribute 'read'" for None, lists, tensors, memoryview."""
    with pytest.raises(InputTypeError) as e:
        pqcodec.encode(source, model=tiny_weights)
    assert isinstance(e.value, TypeError) and isinstance(e.value, PQCodecError)
    message = _one_line(e.value)
    assert message.startswith("an image must be a path") and "numpy array" in message and f"got {expected}" in message
    if isinstance(source, torch.Tensor):
        assert "permute(1, 2, 0).numpy()" in message
    if isinstance(source, io.StringIO):
        assert "binary mode" in message


def test_image_errors_name_their_source(tiny_codec, tmp_path):
    """The bug: errors said `input:` instead of a name."""
    bad = b"not an image at all"
    (tmp_path / "bad.png").write_bytes(bad)
    named = io.BytesIO(bad)
    named.name = "upload.png"
    with open(tmp_path / "bad.png", "rb") as f:
        for source, name in [(bad, "<bytes>"), (bytearray(bad), "<bytes>"), (memoryview(bad), "<bytes>"),
                             (io.BytesIO(bad), "<file object>"), (named, "upload.png"), (f, str(tmp_path / "bad.png")),
                             (tmp_path / "bad.png", str(tmp_path / "bad.png")), (np.zeros((2, 2), np.int64), "<array>")]:
            with pytest.raises(ImageError) as e:
                tiny_codec.encode(source)
            assert _one_line(e.value).startswith(f"{name}: "), (source, str(e.value))
    with pytest.raises(ImageError, match=r"^photo\.jpg: not an image"):
        tiny_codec.encode(bad, name="photo.jpg")


@pytest.mark.parametrize("make, message", [(lambda p: p / "missing.png", "no such file"),
                                           (lambda p: p, "is a folder"),
                                           (lambda p: _empty(p / "empty.png"), "empty file")])
def test_bad_image_paths(tiny_codec, tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(ImageError) as e:
        tiny_codec.encode(str(path))
    assert _one_line(e.value) == f"{path}: {message}" or _one_line(e.value).startswith(f"{path}: {message}")


def _empty(path):
    path.write_bytes(b"")
    return path


def test_an_unseekable_image_stream_is_read_bounded(tiny_codec, monkeypatch):
    """A pipe is read through files.read_image_stream (capped), not whole by Pillow."""
    import pqcodec.files
    monkeypatch.setattr(pqcodec.files, "MAX_IMAGE_STREAM_BYTES", 100)
    stream = _Pipe(_png())
    with pytest.raises(ImageError, match="^<file object>: longer than"):
        tiny_codec.encode(stream)
    assert stream.read_so_far <= 101
    monkeypatch.undo()
    assert tiny_codec.encode(_Pipe(_png()), 2) == tiny_codec.encode(RGB, 2)


class _Pipe(io.RawIOBase):
    """A stream that cannot seek, like stdin from a pipe; counts what was read."""

    def __init__(self, data: bytes):
        self.data, self.read_so_far = data, 0

    def readable(self):
        return True

    def readinto(self, buf):
        chunk = self.data[self.read_so_far:self.read_so_far + len(buf)]
        buf[:len(chunk)] = chunk
        self.read_so_far += len(chunk)
        return len(chunk)


# -- coded sources ------------------------------------------------------------------------------------
def test_every_reasonable_coded_source_decodes(tiny_weights, tiny_codec, coded, tmp_path):
    """The bug: decode(Path), decode(open file), decode("k.bin") failed confusingly."""
    path = tmp_path / "k.bin"
    path.write_bytes(coded)
    expected = np.asarray(tiny_codec.decode(coded))

    def at_end(stream):
        stream.seek(0, io.SEEK_END)  # left there by whoever wrote it: read from its start
        return stream
    for decode in (lambda s: pqcodec.decode(s, model=tiny_weights), tiny_codec.decode):
        with open(path, "rb") as f:
            for source in [coded, bytearray(coded), memoryview(coded), str(path), path, f,
                           at_end(io.BytesIO(coded)), _Pipe(coded)]:
                assert np.array_equal(np.asarray(decode(source)), expected), type(source)


def test_coded_paths_and_streams_are_read_bounded(tiny_weights, tmp_path):
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(bitstream.MAX_FILE_BYTES + 1)  # sparse: refused by its size, not read
    with pytest.raises(CorruptFileError, match=f"^{big}: .*longer than any pqcodec file"):
        pqcodec.decode(big, model=tiny_weights)


@pytest.mark.parametrize("source, error, message", [
    ("missing.bin", PQCodecError, "^missing.bin: no such file$"),
    (None, InputTypeError, "^a coded file must be a path .*; got NoneType$"),
    (["k.bin"], InputTypeError, "got list$"),
    (io.StringIO("PQ"), InputTypeError, "binary mode"),
])
def test_bad_coded_sources(tiny_weights, source, error, message):
    with pytest.raises(error, match=message) as e:
        pqcodec.decode(source, model=tiny_weights)
    _one_line(e.value)


def test_decode_errors_name_their_source(tiny_weights, tiny_codec, coded, tmp_path):
    damaged = coded[:-4]
    path = tmp_path / "cut.bin"
    path.write_bytes(damaged)
    for source, name in [(damaged, "<bytes>"), (path, str(path)), (str(path), str(path))]:
        for decode in (lambda s: pqcodec.decode(s, model=tiny_weights), tiny_codec.decode):
            with pytest.raises(CorruptFileError) as e:
                decode(source)
            assert _one_line(e.value).startswith(f"{name}: "), str(e.value)
    with pytest.raises(CorruptFileError, match="^k.bin: "):
        pqcodec.decode(damaged, model=tiny_weights, name="k.bin")
    with pytest.raises(PQCodecError, match=f"^{tmp_path}: is a folder"):
        pqcodec.decode(tmp_path)


# -- quality and steps --------------------------------------------------------------------------------
@pytest.mark.parametrize("argument", ["quality", "steps"])
@pytest.mark.parametrize("value", [2.5, 2.0, "3", True, False, [2]])
def test_quality_and_steps_must_be_whole_numbers(tiny_weights, argument, value):
    """The bug: quality=2.5 or "3" gave raw TypeErrors, quality=True was taken as 1."""
    with pytest.raises(InputTypeError) as e:
        pqcodec.encode(RGB, model=tiny_weights, **{argument: value})
    assert _one_line(e.value).startswith(f"{argument} must be a whole number in 1..") and repr(value) in str(e.value)


@pytest.mark.parametrize("argument, value", [("quality", 0), ("quality", 3), ("steps", 0), ("steps", 17)])
def test_quality_and_steps_out_of_range(tiny_codec, argument, value):
    with pytest.raises(PQCodecError, match=f"^{argument} must be in 1\\.\\.") as e:
        tiny_codec.encode(RGB, **{argument: value})
    assert not isinstance(e.value, TypeError)


def test_numpy_integers_and_none_are_taken(tiny_codec):
    plain = tiny_codec.encode(RGB, 2, 5)
    assert tiny_codec.encode(RGB, np.int64(2), np.uint8(5)) == plain
    assert tiny_codec.encode(RGB, None, None) == tiny_codec.encode(RGB, tiny_codec.default_level,
                                                                   pqcodec.DEFAULT_STEPS)


# -- weights' config ----------------------------------------------------------------------------------
def test_model_config_refuses_unknown_and_mistyped_fields():
    """The bug: unknown keys were dropped silently."""
    config = json.loads(TINY.to_json())
    assert ModelConfig.from_json(json.dumps(config)) == TINY
    with pytest.raises(ValueError, match="does not know: codebook_sise, window_size"):
        ModelConfig.from_json(json.dumps({**config, "codebook_sise": 16, "window_size": 2}))
    for key, value in [("channels", "8"), ("channels", 8.0), ("channels", True), ("levels", [1, "2"]),
                       ("levels", 2)]:
        with pytest.raises(ValueError, match=f"field {key} must be"):
            ModelConfig.from_json(json.dumps({**config, key: value}))
    with pytest.raises(ValueError, match="JSON object"):
        ModelConfig.from_json("[1, 2]")
    del config["levels"]  # weights from before a field existed: its default
    assert ModelConfig.from_json(json.dumps(config)) == TINY


def test_weights_with_an_unknown_config_field_are_refused_in_one_line(tiny_weights, tmp_path):
    path = tmp_path / "newer.safetensors"
    config = {**json.loads(TINY.to_json()), "attention": "linear"}
    save_file(load_file(str(tiny_weights)), str(path), metadata={"config": json.dumps(config)})
    with pytest.raises(UnsupportedFileError, match="not pqcodec weights.*does not know: attention") as e:
        pqcodec.encode(RGB, model=path)
    _one_line(e.value)


def test_shipped_models_config_loads_strictly():
    from safetensors import safe_open
    with safe_open(str(models_dir() / ZOO[DEFAULT_MODEL].filename), "pt") as f:
        config = ModelConfig.from_json(f.metadata()["config"])
    assert config.num_subvectors == 12 and config.active_levels == (1, 2, 4, 8, 12)
