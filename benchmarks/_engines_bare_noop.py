"""The bare-script baseline of `run train` with the noop engine: one interpreter that imports the
third-party modules a noop worker loads (listed in MODULES.json), then does the noop train's work:
read the training CSV, count its rows, write a one-line JSON model and a result file.

    python _engines_bare_noop.py MODULES.json DATA.csv OUT_DIR
"""
import importlib
import json
import sys
from pathlib import Path


def main() -> int:
    modules_file, data, out = sys.argv[1:4]
    for name in json.loads(Path(modules_file).read_text()):
        try:
            importlib.import_module(name)
        except ImportError:  # a private submodule that only its parent can import; the parent did
            pass
    import pandas as pd

    frame = pd.read_csv(data)
    out_dir = Path(out)
    (out_dir / "model").mkdir(parents=True, exist_ok=True)
    (out_dir / "model" / "model.json").write_text(json.dumps({"rows": len(frame), "echo": ""}))
    (out_dir / "result.json").write_text(json.dumps({"state": "DONE", "rows": len(frame),
                                                     "metrics": [{"name": "rows", "value": float(len(frame))}]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
