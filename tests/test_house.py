"""The layout's rules, checked on the code itself: no module reaches into another by a private name,
nothing edits sys.path, the installed package imports neither eval/ nor tools/, and outside the
coding core nothing imports the core's modules' private names (docs: README, "The code, and its
words")."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TREES = ("pqcodec", "eval", "tools", "tests")


def _sources():
    for tree in TREES:
        yield from sorted((ROOT / tree).rglob("*.py"))


# whose private names are not ours to judge: Python's (os._exit), torch's (torch._int_mm), numpy's
OTHERS = {"self", "cls", "os", "sys", "torch", "np", "numpy"}


def private_uses(path: Path, attributes: bool = True) -> list[str]:
    """`from m import _x`, and with `attributes` `x._y` for any name x but the object's own (self,
    cls) and other projects' modules (OTHERS): a private name of another module or object."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and not (node.module or "").startswith(("torch", "numpy")):
            found += [f"{path.relative_to(ROOT)}:{node.lineno}: from {node.module} import {a.name}"
                      for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
        elif (attributes and isinstance(node, ast.Attribute) and node.attr.startswith("_")
              and not node.attr.startswith("__") and isinstance(node.value, ast.Name) and node.value.id not in OTHERS):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_module_uses_another_modules_private_names():
    """In the package, eval/ and tools/, no module touches another's private names; a test may reach
    into the module it tests (a cache to empty, a helper to drive), but imports no private name."""
    found = [line for path in _sources() for line in private_uses(path, attributes=path.parts[-2] != "tests")]
    assert not found, "\n".join(found)


def test_the_check_finds_a_private_use(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from pqcodec.files import _pipe_fd\n\ndef f(codec):\n    return codec._tiles(1, 1)\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert [line.split(": ", 1)[1] for line in private_uses(bad)] == [
            "from pqcodec.files import _pipe_fd", "codec._tiles"]
    finally:
        ROOT = saved


def test_nothing_edits_sys_path():
    found = [f"{p.relative_to(ROOT)}:{i}" for p in _sources()
             for i, line in enumerate(p.read_text().splitlines(), 1) if "sys.path" in line and p.name != "test_house.py"]
    assert not found, found


@pytest.mark.parametrize("outside", ["eval", "tools", "tests"])
def test_the_package_imports_nothing_outside_it(outside):
    found = []
    for path in sorted((ROOT / "pqcodec").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            found += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == outside]
    assert not found, found


def test_file_digests_names_every_file_that_changed():
    """eval/file_digests.py, which shows a restructuring left the files as they were: two runs of
    the shipped model agree, and a changed, missing or added file is named."""
    from eval.file_digests import differences, digests
    image = ROOT / "tests" / "data" / "kodim23.png"
    first = digests([image], [1], [])
    assert first == digests([image], [1], []) and differences(first, first) == []
    key = "kodim23.png level 1"
    changed = {key: [first[key][0], "0" * 64]}
    assert differences(changed, first) == [f"{key}: {first[key][0]} B -> {first[key][0]} B, "
                                           f"{first[key][1][:12]} -> 000000000000"]
    assert differences({}, first) == [f"{key}: only in the earlier run"]
    assert differences(first, {}) == [f"{key}: only in this run"]


def test_a_level_encode_and_its_decode_call_the_coding_core_once():
    """eval/trip.py on the shipped model: one coded step, one call into pqcodec/coding (the token
    coder does the rest inside it), and the core stands below the codec and the container."""
    import pqcodec
    from eval import trip
    image = str(ROOT / "tests" / "data" / "kodim23.png")
    data = pqcodec.encode(image, 1)
    floor = trip.floors()
    assert floor["coding/"] < floor["bitstream.py"] < floor["codec.py"]
    for run in (lambda: pqcodec.encode(image, 1), lambda: pqcodec.decode(data)):
        result = trip.report(trip.follow(run, floor), ["coding/"])
        assert result["core_entries"] == 1, result
