"""Folders through the CLI: several workers, failures listed and skipped, nothing else touched,
existing outputs kept on a rerun."""
from PIL import Image

from conftest import random_image, run_cli


def test_folder_encode_decode(tiny_weights, tmp_path):
    src = tmp_path / "photos"
    (src / "sub").mkdir(parents=True)
    for i in range(5):
        Image.fromarray(random_image(20 + i, 30, seed=i)).save(src / ("sub" if i % 2 else ".") / f"im{i}.png")
    (src / "broken.png").write_bytes(b"\x89PNG not really")
    (src / "empty.jpg").write_bytes(b"")
    (src / "notes.txt").write_text("not an image: not an input")
    before = sorted(p.stat().st_mtime_ns for p in src.rglob("*"))

    out = tmp_path / "bins"
    r = run_cli("encode", src, "-o", out, "--model", tiny_weights, "--workers", "2", "--quiet")
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "im0.bin", "im2.bin", "im4.bin", "sub", "sub/im1.bin", "sub/im3.bin"]
    failed = [line for line in err.splitlines() if line.startswith("pqcodec: error:")]
    assert len(failed) == 2 and "broken.png" in failed[0] and "empty.jpg" in failed[1], err
    assert "5 written" in err and "Traceback" not in err
    assert sorted(p.stat().st_mtime_ns for p in src.rglob("*")) == before  # inputs untouched

    stamp = (out / "im0.bin").stat().st_mtime_ns
    r = run_cli("encode", src, "-o", out, "--model", tiny_weights, "--workers", "2", "--quiet")
    assert "0 written, 5 skipped" in r.stderr.decode() and (out / "im0.bin").stat().st_mtime_ns == stamp

    (out / "junk.bin").write_bytes(b"PQ\x02garbage")
    pngs = tmp_path / "pngs"
    r = run_cli("decode", out, "-o", pngs, "--model", tiny_weights, "--workers", "2", "--quiet")
    err = r.stderr.decode()
    assert r.returncode == 1 and "junk.bin" in err and "5 written" in err, err
    assert Image.open(pngs / "sub" / "im3.png").size == (30, 23)
    assert not list(tmp_path.rglob("*.part"))


def test_folder_errors(tiny_weights, tmp_path):
    (tmp_path / "empty").mkdir()
    r = run_cli("encode", tmp_path / "empty", "-o", tmp_path / "o", "--model", tiny_weights)
    assert r.returncode == 1 and "no images" in r.stderr.decode()
    (tmp_path / "file").write_bytes(b"x")
    Image.fromarray(random_image(8, 8)).save(tmp_path / "empty" / "a.png")
    r = run_cli("encode", tmp_path / "empty", "-o", tmp_path / "file", "--model", tiny_weights)
    assert r.returncode == 1 and "must be a folder" in r.stderr.decode()
    assert not (tmp_path / "o").exists()
