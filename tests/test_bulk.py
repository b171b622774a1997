"""Collections on Ray (pqcodec/bulk.py, `pqcodec encode|decode SRC -o DST --ray`): the guarantees of
folder mode, on a local Ray instance and on a two-node cluster simulated on one machine (Ray's
cluster_utils.Cluster, one CPU a node, so that the two actors of a job are on two nodes): outputs
byte-identical to single-process `pqcodec encode` / `decode`, a broken input listed and the rest
written, a rerun writing only what is missing, an actor killed mid-job (tests/ray_hooks.py) leaving no
partial file while the job completes, --force and the no-overwrite rule; and, from a terminal,
Ctrl-C stopping the job, its Ray instance and its actors. The tests that need Ray skip without it;
those of the command line without Ray run everywhere."""
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from conftest import DATA, random_image, run_cli
from eval import folder_check
from pqcodec.jobs import CodingOptions, decode_image, encode_image
from pqcodec.request import EncodeRequest
from ray_hooks import ALWAYS_KILL_MARK, KILL_MARK, marker_of

TESTS = Path(__file__).resolve().parent
STOP_LIMIT_S = 20.0  # only a hang takes this long (the stop takes about 2 s on 2 cores)


@pytest.fixture(scope="module", params=["local instance", "two nodes"])
def ray_cluster(request):
    """Ray, joined by this process: a local instance of 2 CPUs, or a head and a worker node of 1 CPU
    each; its workers run tests/ray_hooks.py's set-up hook."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    from ray.cluster_utils import Cluster
    runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])},
                   "worker_process_setup_hook": "ray_hooks.kill_on_first_try"}
    cluster = None
    if request.param == "local instance":
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, runtime_env=runtime_env)
    else:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, logging_level=logging.ERROR, runtime_env=runtime_env)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    try:
        yield request.param
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()


def crops(folder: Path, count: int, size=(64, 48), names=None) -> list[Path]:
    """`count` small crops of the test images (every second one in a sub-folder)."""
    sources = sorted(DATA.glob("*.png"))
    paths = []
    for i in range(count):
        with Image.open(sources[i % len(sources)]) as im:
            crop = im.convert("RGB").crop((9 * i, 7 * i, 9 * i + size[0], 7 * i + size[1]))
        name = names[i] if names else f"im{i}.png"
        path = folder / ("sub" if i % 2 else ".") / name
        path.parent.mkdir(parents=True, exist_ok=True)
        crop.save(path)
        paths.append(path)
    return paths


def files_under(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_outputs_are_the_bytes_of_single_process_pqcodec(ray_cluster, tiny_weights, tmp_path, cli):
    """Encode through the command line (with folder options: steps), decode through the API, and a
    URI source: each output is the file single-process `pqcodec` writes for its input; a broken
    input is listed in one line and the rest are written; other files are ignored."""
    src, out = tmp_path / "photos", tmp_path / "bins"
    images = crops(src, 5)
    (src / "broken.png").write_bytes(b"\x89PNG not really")
    (src / "notes.txt").write_text("not an input")
    r = cli("encode", src, "-o", out, "--ray", "--model", tiny_weights, "--steps", "3", "--quiet")
    err = r.stderr.decode()
    assert r.returncode == 1, err
    errors = [line for line in err.splitlines() if line.startswith("pqcodec: error:")]
    assert len(errors) == 1 and "broken.png" in errors[0] and "Traceback" not in err, err
    assert "5 written, 0 skipped" in err and "1 other file ignored" in err and "5 images in" in err, err
    assert sorted(files_under(out)) == ["im0.bin", "im2.bin", "im4.bin", "sub/im1.bin", "sub/im3.bin"]
    for image in images:
        single = tmp_path / "single.bin"
        assert cli("encode", image, "-o", single, "--model", tiny_weights, "--steps", "3", "--force").returncode == 0
        coded = out / image.relative_to(src).with_suffix(".bin")
        assert coded.read_bytes() == single.read_bytes(), image

    from pqcodec import bulk
    options = CodingOptions(model=str(tiny_weights))
    report = bulk.decode_dataset(out, tmp_path / "pngs", options)
    assert report.written == 5 and not report.failed and report.bytes_out > 0
    for coded in out.rglob("*.bin"):
        png = tmp_path / "pngs" / coded.relative_to(out).with_suffix(".png")
        assert png.read_bytes() == decode_image(coded, str(coded), png, "PNG", options)

    report = bulk.encode_dataset(src.as_uri(), tmp_path / "from-uri", CodingOptions(
        model=str(tiny_weights), request=EncodeRequest(steps=3)))
    assert report.written == 5 and [line for _, line in report.failed] == \
        [f"{src.as_uri()}/broken.png: not an image in a format Pillow can read"]
    assert files_under(tmp_path / "from-uri") == files_under(out)


def test_rerun_force_and_no_overwrite(ray_cluster, tiny_weights, tmp_path):
    """A rerun writes only the missing outputs; an output that exists is never replaced without
    force (one that a run finds is skipped), with force it is; an output that is a folder fails."""
    from pqcodec import bulk
    src, out = tmp_path / "photos", tmp_path / "bins"
    crops(src, 4)
    options = CodingOptions(model=str(tiny_weights))
    first = bulk.encode_dataset(src, out, options)
    assert first.written == 4 and not first.failed
    expected = files_under(out)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.bin")}
    (out / "im2.bin").unlink()
    (out / "sub" / "im1.bin").write_bytes(b"the user's own file")
    rerun = bulk.encode_dataset(src, out, options)
    assert rerun.written == 1 and len(rerun.skipped) == 3 and not rerun.failed
    assert (out / "sub" / "im1.bin").read_bytes() == b"the user's own file"
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in stamps.items() if p.name in ("im0.bin", "im3.bin"))
    assert (out / "im2.bin").read_bytes() == expected["im2.bin"]

    (out / "im0.bin").unlink()
    (out / "im0.bin").mkdir()
    forced = bulk.encode_dataset(src, out, options, force=True)
    assert forced.written == 3 and [line for _, line in forced.failed] == [f"{out / 'im0.bin'}: is a folder"]
    assert (out / "sub" / "im1.bin").read_bytes() == expected["sub/im1.bin"]


def test_an_actor_killed_mid_job(ray_cluster, tiny_weights, tmp_path):
    """The actor coding one input is killed (SIGKILL) on its first try: the job still completes,
    every output is whole and the same as single-process encode's, no temporary file is left. An
    input whose actor dies on every try is listed as failed after Ray's retries, and the rest are
    written."""
    from pqcodec import bulk
    src, out = tmp_path / "photos", tmp_path / "bins"
    images = crops(src, 6, names=[f"{KILL_MARK}.png" if i == 3 else f"im{i}.png" for i in range(6)])
    crops(tmp_path / "poison", 1, names=[f"{ALWAYS_KILL_MARK}.png"])
    (tmp_path / "poison" / f"{ALWAYS_KILL_MARK}.png").rename(src / f"{ALWAYS_KILL_MARK}.png")
    options = CodingOptions(model=str(tiny_weights))
    report = bulk.encode_dataset(src, out, options)
    victim = src / "sub" / f"{KILL_MARK}.png"
    assert marker_of(str(victim)).exists(), "the actor was not killed: nothing was tested"
    assert report.written == 6 and not report.ended_early()
    assert report.failed == [(src / f"{ALWAYS_KILL_MARK}.png", f"{src / ALWAYS_KILL_MARK}.png: the Ray worker coding "
                              f"it died, {bulk.RETRIES + 1} times (out of memory?)")]
    for image in images:
        assert (out / image.relative_to(src).with_suffix(".bin")).read_bytes() == \
            encode_image(image, str(image), options)
    assert sorted(files_under(out)) == sorted(image.relative_to(src).with_suffix(".bin").as_posix() for image in images)


# -- the command line, in a process of its own ------------------------------------------------------
def test_ray_is_not_imported_without_ray(tmp_path):
    """`import pqcodec` and the command line import Ray only for --ray; without Ray installed, --ray
    is one line that says how to install it."""
    code = ("import sys; import pqcodec, pqcodec.cli, pqcodec.bulk; pqcodec.cli.build_parser(); "
            "assert 'ray' not in sys.modules, 'ray imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    crops(tmp_path / "photos", 1)
    without_ray = ("import sys; sys.modules['ray'] = None; from pqcodec.cli import main; "
                   "sys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", without_ray, "encode", str(tmp_path / "photos"), "-o",
                        str(tmp_path / "bins"), "--ray"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.splitlines() == [
        'pqcodec: error: Ray is not installed: pip install "pqcodec[ray]" (or pip install "ray[data]>=2.40")'], r.stderr
    assert not (tmp_path / "bins").exists()


def test_ray_usage_errors(tmp_path):
    crops(tmp_path / "photos", 1)
    for args, words in [((DATA / "kodim23.png", "-o", tmp_path / "x"), "not a folder; --ray codes a folder"),
                        ((tmp_path / "photos", "-o", "-"), "the output of --ray must be a local folder"),
                        ((tmp_path / "photos", "-o", "s3://bucket/out"), "the output of --ray must be a local folder")]:
        r = run_cli("encode", *args, "--ray")
        err = r.stderr.decode()
        assert r.returncode == 2 and len(err.splitlines()) == 1 and words in err, err


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process checks read /proc (Linux)")
@pytest.mark.parametrize("how", ["Ctrl-C", "SIGTERM"])
def test_a_stop_ends_the_job_and_its_ray(tiny_weights, tmp_path, how):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) or SIGTERM (to the main process
    alone) while a job runs on a local Ray instance it started: exit 130 / 143 promptly, a summary,
    no process of it left (Ray's included), no partial file; the rerun (after Ctrl-C) writes exactly
    the rest."""
    pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    src, out = tmp_path / "photos", tmp_path / "bins"
    src.mkdir()
    for i in range(300):
        Image.fromarray(random_image(48, 64, seed=i)).save(src / f"{i:03d}.png")
    command = [sys.executable, "-m", "pqcodec", "encode", str(src), "-o", str(out), "--model", str(tiny_weights),
               "--quiet", "--ray"]
    p = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         start_new_session=True, preexec_fn=folder_check.as_from_a_terminal)
    procs = {}
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and p.poll() is None:
            procs.update(folder_check.descendants(p.pid))
            if out.is_dir() and len(list(out.glob("*.bin"))) >= 3:
                break
            time.sleep(0.05)
        procs.update(folder_check.descendants(p.pid))
        t0 = time.monotonic()
        if how == "Ctrl-C":
            os.killpg(p.pid, signal.SIGINT)
        else:
            os.kill(p.pid, signal.SIGTERM)
        p.wait(timeout=60)
        stop_s = time.monotonic() - t0
        err = p.stderr.read()
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        p.stderr.close()
    written = len(list(out.glob("*.bin")))
    assert p.returncode == (130 if how == "Ctrl-C" else 143) and stop_s < STOP_LIMIT_S, (p.returncode, stop_s, err)
    assert 3 <= written < 300 and f"{written} written" in err and "not done" in err and f"by {how}" in err, err
    assert any("raylet" in c for c in procs.values()), f"no Ray process was seen: nothing was tested {procs}"
    until = time.monotonic() + 10
    while time.monotonic() < until and any(folder_check.alive(q) for q in procs):
        time.sleep(0.1)
    assert not [c for q, c in procs.items() if folder_check.alive(q)], "processes of the job left"
    assert not [p for p in out.iterdir() if not p.name.endswith(".bin")], "a temporary file is left"
    if how != "Ctrl-C":
        return
    r = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and f"{300 - written} written, {written} skipped" in r.stderr, r.stderr
