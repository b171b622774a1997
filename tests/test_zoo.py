"""The shipped models as an installed package finds them (zoo.py): in the package's own
pqcodec/models/, or in $PQCODEC_MODELS_DIR. A missing or wrong model file is the model's one-line
error (ModelFilesError), naming the model, the folder and PQCODEC_MODELS_DIR, never the image or the
.bin file being coded; and setup.cfg's package data carries what the default model codes with.
Fast: no model is loaded (the files are checked first)."""
import configparser
import fnmatch
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

import pqcodec
from pqcodec import zoo
from pqcodec.errors import ModelFilesError, UnsupportedFileError

ROOT = Path(__file__).resolve().parent.parent
GOLDEN_V5 = sorted((ROOT / "tests" / "data" / "golden" / "v7").glob("*.bin"))[0]  # format 7: model v5


@pytest.fixture
def no_cached_models():
    """The zoo's caches emptied before (a model loaded by an earlier test would hide a missing file)
    and after (nothing loaded from a test's folder stays)."""
    zoo._load_codec.cache_clear()
    zoo._load_custom_codec.cache_clear()
    yield
    zoo._load_codec.cache_clear()
    zoo._load_custom_codec.cache_clear()


@pytest.fixture
def models_dir(tmp_path, monkeypatch, no_cached_models):
    """An empty PQCODEC_MODELS_DIR."""
    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setenv("PQCODEC_MODELS_DIR", str(folder))
    return folder


def _one_line_model_error(excinfo, model: str, *words: str) -> str:
    message = str(excinfo.value)
    assert isinstance(excinfo.value, UnsupportedFileError)  # what earlier versions raised: still caught
    assert "\n" not in message and message.startswith(f"model {model}: "), message
    assert all(w in message for w in words), message
    return message


def test_the_models_folder_is_the_packages_own(monkeypatch):
    monkeypatch.delenv("PQCODEC_MODELS_DIR", raising=False)
    assert zoo.models_dir() == Path(zoo.__file__).resolve().parent / "models" == zoo.PACKAGE_MODELS_DIR
    monkeypatch.setenv("PQCODEC_MODELS_DIR", "/elsewhere")
    assert zoo.models_dir() == Path("/elsewhere")


def test_a_missing_model_is_the_models_error_not_the_images(models_dir):
    image = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(ModelFilesError) as e:
        pqcodec.encode(image, name="photo.png")
    message = _one_line_model_error(e, zoo.DEFAULT_MODEL, str(models_dir), "PQCODEC_MODELS_DIR",
                                    zoo.ZOO[zoo.DEFAULT_MODEL].filename)
    assert "photo.png" not in message
    # decode names its source on every other error (errors.named): not on this one
    with pytest.raises(ModelFilesError) as e:
        pqcodec.decode(GOLDEN_V5)
    assert GOLDEN_V5.name not in _one_line_model_error(e, zoo.DEFAULT_MODEL, str(models_dir))


def test_a_head_files_missing_base_and_a_wrong_file_are_the_models_error(models_dir):
    entry = zoo.ZOO[zoo.DEFAULT_MODEL]
    if not entry.base:
        pytest.skip("the default model is not a head file")
    if not (zoo.PACKAGE_MODELS_DIR / entry.filename).is_file():
        pytest.skip("the default model's weights are not in this checkout")
    shutil.copyfile(zoo.PACKAGE_MODELS_DIR / entry.filename, models_dir / entry.filename)
    with pytest.raises(ModelFilesError) as e:
        zoo.load_codec(entry.name)
    _one_line_model_error(e, entry.name, "base weights", zoo.ZOO[entry.base].filename, str(models_dir))
    (models_dir / zoo.ZOO[entry.base].filename).write_bytes(b"not these weights")
    with pytest.raises(ModelFilesError) as e:
        zoo.load_codec(entry.name)
    _one_line_model_error(e, entry.name, "SHA-256", str(models_dir / zoo.ZOO[entry.base].filename))


def test_a_model_the_package_leaves_out_says_where_to_get_it(tmp_path, monkeypatch, no_cached_models):
    """What a wheel gives for a v3 file: its weights are not installed, PQCODEC_MODELS_DIR finds them."""
    left_out = [e for e in zoo.ZOO.values() if not e.in_wheel]
    if not left_out:
        pytest.skip("every shipped model is in the wheel")
    monkeypatch.delenv("PQCODEC_MODELS_DIR", raising=False)
    monkeypatch.setattr(zoo, "PACKAGE_MODELS_DIR", tmp_path)  # as an installed wheel's folder
    with pytest.raises(ModelFilesError) as e:
        zoo.load_codec(left_out[0].name)
    _one_line_model_error(e, left_out[0].name, "not installed with this package", str(tmp_path),
                          f"PQCODEC_MODELS_DIR to a folder holding {left_out[0].filename}")


def test_the_cli_says_a_missing_model_in_one_line(cli, models_dir, tmp_path):
    out = tmp_path / "x.bin"
    r = cli("encode", ROOT / "tests" / "data" / "kodim23.png", "-o", out)
    err = r.stderr.decode()
    assert r.returncode == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"model {zoo.DEFAULT_MODEL}: " in err and "PQCODEC_MODELS_DIR" in err and str(models_dir) in err
    assert not out.exists()


def test_the_cli_does_not_blame_the_input_for_a_missing_model(cli, models_dir, tmp_path):
    r = cli("encode", ROOT / "tests" / "data" / "kodim23.png", "-o", tmp_path / "x.bin")
    assert r.stderr.decode().startswith(f"pqcodec: error: model {zoo.DEFAULT_MODEL}: ")
    r = cli("decode", GOLDEN_V5, "-o", tmp_path / "x.png")
    assert r.stderr.decode().startswith(f"pqcodec: error: model {zoo.DEFAULT_MODEL}: ")


def _package_data() -> tuple[list[str], list[str]]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = lambda section: [s.strip() for s in cfg.get(section, "pqcodec", fallback="").splitlines() if s.strip()]  # noqa: E731
    return lines("options.package_data"), lines("options.exclude_package_data")


def _in_wheel(filename: str) -> bool:
    included, excluded = _package_data()
    path = f"models/{filename}"
    return (any(fnmatch.fnmatch(path, p) for p in included)
            and not any(fnmatch.fnmatch(path, p) for p in excluded))


def test_the_wheel_carries_what_the_default_model_codes_with():
    """setup.cfg's package data: every file of each model the wheel carries (the default one among
    them), with its model card; not those of a model it leaves out (v3). The files themselves say
    what they need (a head file's base, a decoder's autoencoder, by SHA-256): the zoo agrees."""
    assert zoo.ZOO[zoo.DEFAULT_MODEL].in_wheel
    card = lambda filename: Path(filename).stem + ".md"  # noqa: E731
    carried = {n for e in zoo.ZOO.values() if e.in_wheel for f in zoo.files_needed(e.name)
               for n in (f.filename, card(f.filename))}
    assert {f.filename for f in zoo.files_needed(zoo.DEFAULT_MODEL)} <= carried  # v5, its base v4, the decoder
    for name in carried:
        assert _in_wheel(name), f"setup.cfg's package data leaves out models/{name}"
        assert (zoo.PACKAGE_MODELS_DIR / name).is_file(), name
    for entry in zoo.ZOO.values():
        if not entry.in_wheel:
            for name in (entry.filename, card(entry.filename)):
                assert name in carried or not _in_wheel(name), f"setup.cfg's package data carries models/{name}"

    by_sha = {e.sha256: e for e in zoo.ZOO.values()}
    for entry in zoo.ZOO.values():
        if not (zoo.PACKAGE_MODELS_DIR / entry.filename).is_file():
            continue  # a model left out of an installed wheel: its files are not here to read
        with safe_open(str(zoo.PACKAGE_MODELS_DIR / entry.filename), "pt") as f:
            base_sha256 = (f.metadata() or {}).get("base_sha256")
        assert (by_sha[base_sha256].name if base_sha256 else None) == entry.base, entry.name
        for d in entry.decoders:
            with safe_open(str(zoo.PACKAGE_MODELS_DIR / d.filename), "pt") as f:
                paired = by_sha[f.metadata()["base_sha256"]]
            # a decoder pairs with the autoencoder the model codes with: its own weights' or its base's
            assert paired.name in (entry.name, entry.base), (entry.name, d.filename)
