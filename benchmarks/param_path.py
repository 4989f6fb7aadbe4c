"""The rooms a parameter crosses: `run train configs/retail-sales.json -p learning_rate=VALUE` run in
this process with a tracer that notes every function of `runtime` holding VALUE (as text, or as
the number it becomes) in a local variable, then the worker that receives it. A room is a top-level
module or subpackage of `runtime` (as in benchmarks/house.py); a re-entry is the value coming back
into a room after it had gone on to another.

    python benchmarks/param_path.py            # needs data/retail (run data retail --out data/retail)
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VALUE = "0.0123457"


def _holds(value: object, depth: int = 0) -> bool:
    if isinstance(value, str):
        return VALUE in value
    if isinstance(value, float):
        return abs(value - float(VALUE)) < 1e-12
    if depth < 2 and isinstance(value, dict):
        return any(_holds(v, depth + 1) or _holds(k, depth + 1) for k, v in list(value.items())[:200])
    if depth < 2 and isinstance(value, (list, tuple)):
        return any(_holds(v, depth + 1) for v in value[:200])
    if depth < 1 and hasattr(value, "__dict__") and not isinstance(value, type):
        try:
            return any(_holds(v, depth + 1) for v in list(vars(value).values())[:50])
        except TypeError:
            return False
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "retail-sales.json"))
    parser.add_argument("--where", action="store_true", help="the function each step starts in")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from runtime.cli.main import main as run_main

    package = str(ROOT / "runtime") + "/"
    path: list[str] = []
    where: list[str] = []   # the first function of each step, for --where

    def tracer(frame, event, arg):   # noqa: ANN001
        if event != "call":
            return None
        filename = frame.f_code.co_filename
        if not filename.startswith(package):
            return None

        def local(frame, event, arg):   # noqa: ANN001
            if event == "return":
                if any(_holds(v) for v in list(frame.f_locals.values())):
                    rel = Path(filename).relative_to(package)
                    room = rel.parts[0].removesuffix(".py")
                    if not path or path[-1] != room:
                        path.append(room)
                        where.append(f"{rel}:{frame.f_code.co_name}")
            return local
        return local

    with tempfile.TemporaryDirectory() as home:
        sys.settrace(tracer)
        try:
            code = run_main(["train", args.config, "-p", f"learning_rate={VALUE}", "--home", home,
                             "--cold", "--json"])
        finally:
            sys.settrace(None)
    path.append("worker (its own process)")
    rooms = list(dict.fromkeys(path))
    reentries = len(path) - len(rooms)
    print(f"exit {code}")
    print(f"the parameter's path: {' -> '.join(path)}")
    print(f"rooms crossed: {len(rooms)}; re-entries: {reentries} "
          f"(into: {', '.join(sorted({r for i, r in enumerate(path) if r in path[:i]})) or '-'})")
    if args.where:
        for step in where:
            print("  ", step)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
