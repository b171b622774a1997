"""Folders through the CLI: several workers, failures listed and skipped, nothing else touched,
existing outputs kept on a rerun; inputs that would share an output, the one list of formats, and
--force in a folder run. Stopping a folder run: test_cli_signals.py."""
import os
import stat

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


def _save(path, seed, size=(20, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(random_image(*size, seed=seed)).save(path)


def test_inputs_that_share_a_name_keep_their_extension(tiny_weights, tmp_path):
    """a.png, a.jpg and b.png, b.PNG would all map to a.bin / b.bin: each keeps its extension in its
    output name instead, nothing is lost, a note says so; a name that still collides fails."""
    src, out = tmp_path / "photos", tmp_path / "bins"
    for i, name in enumerate(["a.png", "a.jpg", "b.png", "b.PNG", "c.png"]):
        _save(src / name, seed=i)
    r = run_cli("encode", src, "-o", out, "--model", tiny_weights, "--workers", "2", "--quiet")
    err = r.stderr.decode()
    assert r.returncode == 0 and "5 written" in err, err
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg.bin", "a.png.bin", "b.PNG.bin", "b.png.bin", "c.bin"]
    assert err.count("pqcodec: note:") == 2 and "a.jpg.bin, a.png.bin" in err, err

    _save(src / "a.png.jpg", seed=9)  # its own output, a.png.bin, is a.png's kept name
    r = run_cli("encode", src, "-o", tmp_path / "bins2", "--model", tiny_weights, "--workers", "2", "--quiet")
    err = r.stderr.decode()
    failed = [line for line in err.splitlines() if line.startswith("pqcodec: error:")]
    assert r.returncode == 1 and len(failed) == 1 and "a.png.jpg" in failed[0] and "a.png.bin" in failed[0], err
    assert "5 written" in err and (tmp_path / "bins2" / "a.png.bin").is_file()


def test_every_format_pillow_reads_is_an_input_and_others_are_counted(tiny_weights, tmp_path):
    """The folder run picks its inputs by the one list of what Pillow reads (formats.py), which the
    single-file run also accepts; files it passes over are counted in the summary."""
    from pqcodec.formats import readable_suffixes
    src, out = tmp_path / "photos", tmp_path / "bins"
    names = ["a.gif", "b.pgm", "c.tga", "d.jfif", "e.tiff", "f.bmp"]
    names += ["g.avif"] if ".avif" in readable_suffixes() else []
    for i, name in enumerate(names):
        img = Image.fromarray(random_image(16, 24, seed=i))
        src.mkdir(exist_ok=True)
        (img.convert("L") if name.endswith(".pgm") else img).save(src / name)
    (src / "notes.txt").write_text("not an image")
    (src / "movie.xyz").write_bytes(b"\0" * 10)
    r = run_cli("encode", src, "-o", out, "--model", tiny_weights, "--workers", "2", "--quiet")
    err = r.stderr.decode()
    assert r.returncode == 0 and f"{len(names)} written" in err and "2 other files ignored" in err, err
    assert sorted(p.stem for p in out.iterdir()) == sorted(n.split(".")[0] for n in names)


def test_force_in_a_folder_run_replaces_only_regular_files(tiny_weights, tmp_path):
    src, out = tmp_path / "photos", tmp_path / "bins"
    for i in range(3):
        _save(src / f"im{i}.png", seed=i)
    out.mkdir()
    os.mkfifo(out / "im0.bin")
    (out / "im1.bin").write_bytes(b"old")
    r = run_cli("encode", src, "-o", out, "--model", tiny_weights, "--workers", "2", "--quiet", "--force")
    err = r.stderr.decode()
    assert r.returncode == 1 and "2 written" in err and "im0.bin: is not a regular file" in err, err
    assert stat.S_ISFIFO(os.lstat(out / "im0.bin").st_mode) and (out / "im1.bin").read_bytes()[:2] == b"PQ"


def test_folder_warnings_are_one_line_per_file(tiny_weights, tmp_path):
    from test_cli_errors import corrupt_exif_jpeg
    src = tmp_path / "photos"
    src.mkdir()
    corrupt_exif_jpeg(src / "exif.jpg")
    _save(src / "fine.png", seed=1)
    r = run_cli("encode", src, "-o", tmp_path / "bins", "--model", tiny_weights, "--workers", "2", "--quiet")
    err = r.stderr.decode()
    warned = [line for line in err.splitlines() if "warning" in line.lower()]
    assert r.returncode == 0 and len(warned) == 1, err
    assert warned[0].startswith(f"pqcodec: warning: {src / 'exif.jpg'}: Pillow: "), err
    assert "site-packages" not in err
