"""Follow one encode or decode through pqcodec as it runs: which files it enters, how often it moves
between them, how often it climbs back to a file on a higher layer, and how often it enters the
coding core. Run it on two commits to see what a restructuring did to the path a call takes.

    python -m eval.trip encode tests/data/kodim23.png --max-bytes 5000
    python -m eval.trip decode k.bin [--core coding/]

Prints one line of figures, then the rooms by how often the trip entered them.

Rooms: each file of the package, a sub-package (coding/, nets/, train/) counted as one (--by-file:
its files apart too). Layers: a
room stands one above the highest room it imports (imports anywhere in its files, read from the
source), so the layout's ground floor is 1. The trace (sys.setprofile) notes the room of the
innermost package frame at every Python call and return; a move is a change of room, a climb a
return into a room on a higher layer than the one left (the caller takes the work back after a
lower layer served it); the core's entries are the calls into it from another room. The first and last room are the public API's (pqcodec/__init__.py).
"""
import argparse
import ast
import sys
import time
from collections import Counter
from pathlib import Path

import pqcodec

PACKAGE = Path(pqcodec.__file__).resolve().parent
BY_FILE = False  # --by-file: a sub-package's files are rooms of their own too


def room_of(path: Path) -> str | None:
    """The room of a source file of the package: "codec.py", "coding/" (a sub-package), or None."""
    try:
        rel = path.resolve().relative_to(PACKAGE)
    except ValueError:
        return None
    return f"{rel.parts[0]}/" if len(rel.parts) > 1 and not BY_FILE else rel.as_posix()


def _imported_rooms(path: Path) -> set[str]:
    """The rooms a source file imports (relative imports, and absolute ones of pqcodec)."""
    rooms = set()
    base = path.parent
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.ImportFrom):  # the module, and each name that is a module of it
            parts = (node.module or "").split(".") if node.module else []
            if node.level:
                folder = base.parents[node.level - 2] if node.level > 1 else base
            elif parts[:1] == ["pqcodec"]:
                folder, parts = PACKAGE, parts[1:]
            else:
                continue
            targets = ([folder.joinpath(*parts)] if parts else []) + [folder.joinpath(*parts, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [PACKAGE.joinpath(*a.name.split(".")[1:]) for a in node.names if a.name.split(".")[0] == "pqcodec"]
        for t in targets:
            for candidate in (t.with_suffix(".py"), t / "__init__.py"):
                if candidate.is_file():
                    rooms.add(room_of(candidate))
    return rooms


def floors() -> dict[str, int]:
    """Each room's layer: 1 + the highest layer of the rooms it imports (its own files left out)."""
    imports: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        room = room_of(path)
        imports.setdefault(room, set()).update(_imported_rooms(path) - {room})
    floor: dict[str, int] = {}

    def of(room, seen=()):
        if room not in floor:
            below = [of(r, seen + (room,)) for r in imports.get(room, ()) if r not in seen]
            floor[room] = 1 + max(below, default=0)
        return floor[room]
    for room in imports:
        of(room)
    return floor


class Trip:
    """The rooms a call passes through, from sys.setprofile's Python calls and returns."""

    def __init__(self, floor: dict[str, int]):
        self.floor, self.path, self.climbs, self.current = floor, [], 0, None
        self.called = []  # (from, to) of every change of room by a call (not by a return), in order
        self.rooms = {}  # code object's file -> room (cached)

    def _room(self, frame):
        while frame is not None:
            name = frame.f_code.co_filename
            if name not in self.rooms:
                self.rooms[name] = room_of(Path(name)) if name.endswith(".py") else None
            if self.rooms[name]:
                return self.rooms[name]
            frame = frame.f_back
        return None

    def __call__(self, frame, event, arg):
        if event == "call":
            room = self._room(frame)
        elif event == "return":
            room = self._room(frame.f_back)
        else:
            return
        if room is None or room == self.current:
            return
        if event == "return" and self.current and self.floor.get(room, 0) > self.floor.get(self.current, 0):
            self.climbs += 1
        if event == "call":
            self.called.append((self.current, room))
        self.current = room
        self.path.append(room)


def follow(run, floor: dict[str, int]) -> Trip:
    trip = Trip(floor)
    sys.setprofile(trip)
    try:
        run()
    finally:
        sys.setprofile(None)
    return trip


def report(trip: Trip, core: list[str]) -> dict:
    """Rooms, moves, climbs, and the calls into the core (any of the rooms `core`) from outside it."""
    entered = Counter(trip.path)
    into_core = sum(1 for a, b in trip.called if b in core and a not in core)
    return dict(rooms=len(entered), moves=len(trip.path) - 1, climbs=trip.climbs, core=core,
                core_entries=into_core, entries=dict(entered.most_common()))


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m eval.trip", description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=("encode", "decode"))
    p.add_argument("input", type=Path, help="an image (encode) or a .bin file (decode)")
    p.add_argument("--quality", type=int, help="encode: the level")
    p.add_argument("--max-bytes", type=int, help="encode: a size (rate control)")
    p.add_argument("--core", nargs="+", default=["coding/"],
                   help="the rooms counted as the coding core (default coding/; before pqcodec 0.14.0 the core was "
                        "spread: latent.py entropy.py rangecoder.py bitstream.py nets/)")
    p.add_argument("--by-file", action="store_true", help="every file a room, a sub-package's too")
    args = p.parse_args(argv)
    global BY_FILE
    BY_FILE = args.by_file
    import torch
    torch.set_num_threads(1)
    if args.what == "encode":
        kwargs = dict(max_bytes=args.max_bytes) if args.max_bytes else dict(quality=args.quality)
        pqcodec.encode(str(args.input), **kwargs)  # models loaded and kernels chosen before the trace

        def run():
            pqcodec.encode(str(args.input), **kwargs)
    else:
        data = args.input.read_bytes()
        pqcodec.decode(data)

        def run():
            pqcodec.decode(data)
    start = time.perf_counter()
    result = report(follow(run, floors()), args.core)
    print(f"pqcodec {pqcodec.__version__}, {args.what} {args.input.name}: {result['rooms']} rooms, "
          f"{result['moves']} moves, {result['climbs']} climbs back to a higher layer, "
          f"the core ({' '.join(args.core)}) called into {result['core_entries']} times ({time.perf_counter() - start:.1f} s traced)")
    for room, n in result["entries"].items():
        print(f"  {n:7d}  {room}")


if __name__ == "__main__":
    main()
