"""The path a parameter takes: `run train configs/retail-sales.json -p learning_rate=VALUE` run in
this process with a tracer, then the worker that receives it (its own process, counted as one last
step into runtime/worker.py).

What is counted, exactly:

- A step: a function of `runtime/` that holds VALUE for the first time (as text, or as the number
  it becomes, in an argument or a local variable, looked into
  objects two levels deep and into dicts and lists three: a Prepared's resolved values). It is noted at the function's call when an argument holds VALUE, else at the first line
  (or its return) after which a local does. A function that already held it (a caller getting a
  result back) takes no new step.
- A move: a step noted at its call comes from the nearest function up its call stack that held
  VALUE (it was handed down). A step noted later comes from the latest step among the functions
  it called (it was handed back up); with none, VALUE was read back at rest (from the registry's
  file, or an object shared earlier): a read, not a move. A move between two rooms is one move of
  the room path; a room is a top-level module or subpackage of `runtime` (as in
  benchmarks/house.py: `runs`, `cli`, `service`, ...). The same function handing VALUE to the
  same file again (a poll, a loop) is one move.
- Files crossed, rooms crossed: the distinct files and rooms of the steps.
- Entered: how many moves arrive in a file or a room (the first arrival included).
- Climbs back up: the moves between rooms that (a) arrive in a room the value had already been
  in and left, or (b) go to a room on a higher floor of the house (house.py's import graph,
  circles folded: a room's floor is 1 + the highest floor among the rooms it imports, so `cli` is
  high and `store` low). A move that is both counts once. A value handed only down the house,
  each room once, climbs 0 times.

    python benchmarks/param_path.py            # needs data/retail (run data retail --out data/retail)
    python benchmarks/param_path.py --where    # the function of each step
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VALUE = "0.0123457"
WORKER = "worker.py"


def _holds(value: object, depth: int = 0) -> bool:
    if isinstance(value, str):
        return VALUE in value
    if isinstance(value, float):
        return abs(value - float(VALUE)) < 1e-12
    if depth < 3 and isinstance(value, dict):
        return any(_holds(v, depth + 1) or _holds(k, depth + 1) for k, v in list(value.items())[:200])
    if depth < 3 and isinstance(value, (list, tuple, frozenset, set)):
        return any(_holds(v, depth + 1) for v in list(value)[:200])
    if depth < 2 and hasattr(value, "__dict__") and not isinstance(value, type):
        try:
            return any(_holds(v, depth + 1) for v in list(vars(value).values())[:50])
        except TypeError:
            return False
    return False


def room_floors() -> dict[str, int]:
    """Each room's floor in the house (benchmarks/house.py's graph, circles folded)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import house

    graph = house.arrows()[0]
    folded = {v: v for v in graph}
    for comp in house.circles(graph):
        for v in comp:
            folded[v] = "+".join(comp)
    below: dict[str, set[str]] = {}
    for v, targets in graph.items():
        below.setdefault(folded[v], set()).update(folded[w] for w in targets if folded[w] != folded[v])
    memo: dict[str, int] = {}

    def floor(v: str) -> int:
        if v not in memo:
            memo[v] = 1 + max((floor(w) for w in below.get(v, ())), default=0)
        return memo[v]

    return {v: floor(folded[v]) for v in graph}


def trace_run(config: str) -> tuple[int, list[tuple[str, str, int]]]:
    """Runs the command traced; returns its exit code and the steps (file, function, the index
    of the step it came from)."""
    sys.path.insert(0, str(ROOT))
    from runtime.cli.main import main as run_main

    package = str(ROOT / "runtime") + "/"
    steps: list[tuple[str, str, int]] = []   # file, function, the step it came from (-1: read)
    stacks: list[frozenset[int]] = []         # each step's callers (frame ids)
    held: dict[int, tuple[object, int]] = {}   # frames kept alive, so their ids stay theirs

    def note(frame, begin: int = -1) -> bool:   # noqa: ANN001
        if not any(_holds(v) for v in list(frame.f_locals.values())):
            return False
        source, callers, up = -1, [], frame.f_back
        while up is not None:
            callers.append(id(up))
            if begin < 0 and source < 0 and id(up) in held and held[id(up)][0] is up:
                source = held[id(up)][1]
            up = up.f_back
        if begin >= 0:   # noted after its call: handed back up by a callee, or read at rest
            source = max((j for j in range(begin, len(steps)) if id(frame) in stacks[j]),
                         default=-1)
        held[id(frame)] = (frame, len(steps))
        stacks.append(frozenset(callers))
        steps.append((str(Path(frame.f_code.co_filename).relative_to(package)),
                      frame.f_code.co_name, source))
        return True

    def tracer(frame, event, arg):   # noqa: ANN001
        if event != "call" or not frame.f_code.co_filename.startswith(package):
            return None
        if note(frame):
            return None
        begin = len(steps)

        def local(frame, event, arg):   # noqa: ANN001
            if event in ("line", "return") and note(frame, begin):
                frame.f_trace = None   # returning None alone keeps tracing this frame
                return None
            return local
        return local

    with tempfile.TemporaryDirectory() as home:
        sys.settrace(tracer)
        try:
            code = run_main(["train", config, "-p", f"learning_rate={VALUE}", "--home", home,
                             "--cold", "--json"])
        finally:
            sys.settrace(None)
    # The worker gets it from the backend that started it
    starter = max((i for i, (f, _, _) in enumerate(steps) if f.startswith("backends/")),
                  default=len(steps) - 1)
    steps.append((WORKER, "main (its own process)", starter))
    return code, steps


def _room(file: str) -> str:
    return Path(file).parts[0].removesuffix(".py")


def measure(steps: list[tuple[str, str, int]], floors: dict[str, int]) -> dict[str, object]:
    files = [f for f, _, _ in steps]
    # The same holder handing VALUE to the same file again (a poll, a loop) is one move
    seen = dict.fromkeys((src, files[i]) for i, (_, _, src) in enumerate(steps)
                         if src >= 0 and files[src] != files[i])
    moves = [(files[src], file) for src, file in seen]
    room_moves = [(_room(a), _room(b)) for a, b in moves if _room(a) != _room(b)]
    climbs: list[str] = []
    been = {_room(files[0])}
    for here, there in room_moves:
        why = []
        if there in been:
            why.append("re-entered")
        if floors.get(there, 0) > floors.get(here, 0):
            why.append(f"floor {floors.get(here)} -> {floors.get(there)}")
        if why:
            climbs.append(f"{here} -> {there} ({', '.join(why)})")
        been.add(there)
    return {"files": list(dict.fromkeys(files)), "rooms": list(dict.fromkeys(map(_room, files))),
            "reads": sum(1 for _, _, src in steps[1:] if src < 0),
            "moves": moves, "room_moves": room_moves, "climbs": climbs,
            "file_entries": Counter([files[0], *(b for _, b in moves)]),
            "room_entries": Counter([_room(files[0]), *(b for _, b in room_moves)])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "retail-sales.json"))
    parser.add_argument("--where", action="store_true", help="the function of each step")
    args = parser.parse_args()
    code, steps = trace_run(args.config)
    floors = room_floors()
    m = measure(steps, floors)
    rooms, files = m["rooms"], m["files"]
    print(f"exit {code}")
    print("the parameter's moves between rooms:")
    for here, there in m["room_moves"]:
        print(f"   {here} -> {there}")
    print(f"reads at rest: {m['reads']}")
    print(f"files crossed: {len(files)}; rooms crossed: {len(rooms)}; "
          f"climbs back up: {len(m['climbs'])}")
    for climb in m["climbs"]:
        print(f"   climb: {climb}")
    entered = {k: v for k, v in m["room_entries"].items() if v > 1}
    print("rooms entered more than once: "
          + (", ".join(f"{k} {v}x" for k, v in sorted(entered.items())) or "none"))
    print(f"cli/runs.py entered {m['file_entries'].get('cli/runs.py', 0)}x, "
          f"runs/ entered {m['room_entries'].get('runs', 0)}x")
    print("floors: " + ", ".join(f"{r} {floors.get(r)}" for r in rooms))
    if args.where:
        for i, (file, function, source) in enumerate(steps):
            print(f"   {i:3d} {file}:{function}  (from {source})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
