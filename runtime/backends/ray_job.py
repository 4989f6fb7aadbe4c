"""The Ray job itself, as it runs on the cluster, and the artifacts bundle it sends back in its log.

`python -m runtime.backends.ray_job STAGE` is the job's entrypoint: STAGE is the package uploaded
with the job (runtime_env py_modules) holding the worker's spec, the job's settings, the model a
score run uses and, for a user's recipe, the recipe itself. The `runtime` package travels with the
job too, so a node needs Ray and nothing of this runtime. Neither this module nor the worker
imports `ray`.
"""
from __future__ import annotations

import base64
import hashlib
import importlib
import io
import json
import os
import shutil
import signal
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Optional

from . import RESULT_FILE, SPEC_FILE, WorkerSpec, read_result

__all__ = ["BUNDLE_BEGIN", "BUNDLE_END", "DISTRIBUTION", "JOB_FILE", "RECIPE_DIR", "job_main",
           "make_bundle", "restore_bundle", "runtime_missing", "split_bundle"]

RETURN_LIMIT_MB = 256.0      # artifacts brought back in the log; larger needs a shared store
BUNDLE_BEGIN = "@@mlinstance-runtime-artifacts begin"
BUNDLE_END = "@@mlinstance-runtime-artifacts end"
_BUNDLE_LINE_CHARS = 32 * 1024
JOB_FILE = "job.json"
RECIPE_DIR = "recipe"        # the stored recipe, inside the job's package
MODEL_DIR = "model"          # the model a score run uses, inside the job's package
DISTRIBUTION = "mlinstance-runtime"


# --- artifacts that travel in the log ------------------------------------------------------------

def split_bundle(text: str) -> tuple[str, Optional[bytes]]:
    """The log without the artifacts bundle, and the bundle's bytes (None when there is none, or
    when it is still being written)."""
    from ..errors import ExecutionError

    start = text.find(BUNDLE_BEGIN)
    if start < 0:
        return text, None
    end = text.find(BUNDLE_END, start)
    if end < 0:
        return text[:start], None
    header, _, body = text[start:end].partition("\n")
    rest = text[end + len(BUNDLE_END):].lstrip("\n")
    _, _, digest = header.rpartition(" ")
    data = base64.b64decode("".join(body.split()))
    if hashlib.sha256(data).hexdigest() != digest:
        raise ExecutionError("The artifacts in the Ray job's log are damaged (checksum mismatch)")
    return text[:start] + rest, data


def make_bundle(run_dir: Path, result: dict[str, Any]) -> bytes:
    """A tar.gz of the run folder (less the spec, which may hold secrets) and of an output written
    outside it, with a manifest saying where each came from."""
    buffer = io.BytesIO()
    output = result.get("output")
    manifest = {"run_dir": str(run_dir), "output": output, "output_member": None}
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(run_dir.rglob("*")):
            rel = path.relative_to(run_dir)
            if rel.as_posix() == SPEC_FILE or not path.is_file():
                continue
            tar.add(path, arcname=f"run/{rel.as_posix()}", recursive=False)
        if output and Path(output).exists() and not _inside(Path(output), run_dir):
            manifest["output_member"] = f"output/{Path(output).name}"
            tar.add(output, arcname=manifest["output_member"])
        data = json.dumps(manifest).encode()
        member = tarfile.TarInfo("manifest.json")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def restore_bundle(data: bytes, run_dir: Path) -> Optional[dict[str, Any]]:
    """Unpack a bundle into the local run folder; the result's paths are rewritten to local ones
    (an output written outside the job's run folder lands at the same path here)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
        for member in tar.getmembers():
            if member.name.startswith("run/") and member.isfile():
                tar.extract(member, run_dir.parent / "_ray_incoming", filter="data")
        incoming = run_dir.parent / "_ray_incoming" / "run"
        if incoming.is_dir():
            for item in incoming.iterdir():
                target = run_dir / item.name
                if target.is_dir():
                    shutil.rmtree(target)
                os.replace(item, target)
        shutil.rmtree(run_dir.parent / "_ray_incoming", ignore_errors=True)
        remote_dir = manifest["run_dir"]
        result = read_result(run_dir / RESULT_FILE)
        if result is None:
            return None

        def local(path: Optional[str]) -> Optional[str]:
            if path and (path == remote_dir or path.startswith(remote_dir.rstrip("/") + "/")):
                return str(run_dir / Path(path).relative_to(remote_dir))
            return path

        result["model_dir"] = local(result.get("model_dir"))
        result["output"] = local(result.get("output"))
        if manifest.get("output_member"):
            target = Path(manifest["output"])   # a relative path: from this working directory
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(manifest["output_member"]) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)
            result["output"] = str(target.resolve())
        (run_dir / RESULT_FILE).write_text(json.dumps(result, indent=2, default=str))
        return result


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


# --- the job itself (on the cluster) -------------------------------------------------------------

def runtime_missing(engine: str) -> Optional[str]:
    """Why this Python cannot run `engine`, when the cause is that it lacks the runtime's
    distribution (the job brings the `runtime` package, not the installed distribution whose
    entry points name third-party engines); None when it has it, or the engine is an import path
    (the submitter turns a built-in engine's name into one)."""
    from importlib import metadata

    if ":" in engine:   # `module:Class` or `recipe:<kind>:<dir>`: no entry point needed
        return None
    try:
        metadata.distribution(DISTRIBUTION)
        return None
    except metadata.PackageNotFoundError:
        pass
    return (f"the job's Python on the Ray cluster ({sys.executable}) has no {DISTRIBUTION} "
            f"installed, so it knows no engine plugin (engine {engine!r} is an entry point of that "
            "package; the job brings the runtime's source, not the installed package). "
            f"Install it in the cluster's Python (pip install '{DISTRIBUTION}[ray]', or a wheel "
            "of this checkout: pip wheel --no-deps . -w dist), let Ray install it for the job "
            "(run submit --pip REQ with a requirement or wheel the cluster can reach; "
            "MLRUNTIME_RAY_PIP for the server), or run the cluster from the project's Docker "
            "image (docker/Dockerfile.cpu or docker/Dockerfile.cuda, which install it)")


def _compat_first() -> None:
    """runtime/compat (our platform_sdk, ml.runtime... and sdk) right before site-packages, as a
    recipe environment's .pth puts it locally: a package of the cluster's Python under one of
    those names never shadows ours. Child processes of the recipe get it through PYTHONPATH."""
    from ..recipes import compat_path

    compat = str(compat_path())
    if compat not in sys.path:
        sites = [i for i, p in enumerate(sys.path) if p.rstrip("/").endswith("site-packages")]
        sys.path.insert(sites[0] if sites else len(sys.path), compat)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [p for p in [os.environ.get("PYTHONPATH", ""), compat] if p])


def _moved(values: dict[str, Any], moves: dict[str, str]) -> dict[str, Any]:
    """`values` with paths under the submitter's run and model folders (the keys the platform
    injected into a recipe's config: modelPATH, logsPATH, ...) moved to the job's own."""
    def move(value: Any) -> Any:
        if isinstance(value, str):
            for old, new in moves.items():
                if value == old or value.startswith(old.rstrip("/") + "/"):
                    return new + value[len(old.rstrip("/")):] if value != old else new
        return value
    return {key: move(value) for key, value in values.items()}


def _unpacked(stage: Path, name: str, scratch: list[Path]) -> Optional[Path]:
    """`name`.tar of the job's package unpacked into a folder of this job (None: not sent); the
    folder is added to `scratch`, which the job removes when it ends."""
    archive = stage / f"{name}.tar"
    if not archive.is_file():
        return None
    scratch.append(Path(tempfile.mkdtemp(prefix=f"mlrt-{name}-")))
    folder = scratch[-1] / name
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    return folder


def job_main(argv: list[str]) -> int:
    """`python -m runtime.backends.ray_job STAGE_MODULE`: the Ray job's entrypoint.

    Runs the worker on the uploaded spec, exactly as a local run does, then (artifacts "return")
    prints the run's artifacts as one base64 block at the end of the log.
    """
    if len(argv) != 1:
        print("usage: python -m runtime.backends.ray_job STAGE_MODULE", file=sys.stderr)
        return 2
    stage = Path(importlib.import_module(argv[0]).__file__).parent
    scratch: list[Path] = []   # this job's temporary folders on the node: gone when it ends

    def remove_scratch() -> None:
        for folder in scratch:
            shutil.rmtree(folder, ignore_errors=True)

    def stopped(signum: int, _frame: Any) -> None:
        # Ray stops a job with SIGTERM (SIGKILL a few seconds later): remove them, then end
        # as SIGTERM ends a process
        remove_scratch()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, stopped)
    try:
        return _run_job(stage, scratch)
    finally:
        remove_scratch()


def _run_job(stage: Path, scratch: list[Path]) -> int:
    job = json.loads((stage / JOB_FILE).read_text())
    spec = WorkerSpec.read(stage / SPEC_FILE)
    if job["artifacts"] == "shared":
        run_dir = Path(job["run_dir"])
        model_dir = spec.model_dir
    else:
        run_dir = Path(tempfile.mkdtemp(prefix="mlrt-run-"))
        scratch.append(run_dir)
        model_dir = _unpacked(stage, MODEL_DIR, scratch)
    update: dict[str, Any] = {"run_dir": run_dir, "model_dir": model_dir}
    if job.get("recipe"):   # the recipe came in the job's package: never a path of the submitter
        from ..recipes import reference

        _compat_first()
        update["engine"] = reference(job["recipe"]["kind"], _unpacked(stage, RECIPE_DIR, scratch))
        moves = {job["run_dir"]: str(run_dir)}
        if job.get("model_dir") and model_dir is not None:
            moves[job["model_dir"]] = str(model_dir)
        update["values"] = _moved(spec.values, moves)
    spec = spec.model_copy(update=update)
    spec_path = spec.write(run_dir / SPEC_FILE)

    from .. import worker

    missing = runtime_missing(spec.engine)
    if missing is not None:   # not "installed engines: none": say which Python lacks what
        print(f"error: {missing}", flush=True)
        worker._write_result(run_dir, {
            "state": "FAILED", "run_id": spec.run_id, "engine": spec.engine, "mode": spec.mode,
            "metrics": [], "model_dir": None, "output": None, "rows": None, "durations_s": {},
            "error": {"type": "RuntimeNotInstalled", "message": missing, "traceback": ""}})
        code = 1
    else:
        code = worker.main([str(spec_path)])
    if job["artifacts"] == "return":
        result = read_result(run_dir / RESULT_FILE)
        if result is not None:
            data = make_bundle(run_dir, result)
            limit_mb = float(job.get("return_limit_mb") or RETURN_LIMIT_MB)
            if len(data) > limit_mb * (1 << 20):
                print(f"error: the run's artifacts are {len(data) / (1 << 20):.0f} MiB compressed, "
                      f"over the {limit_mb:g} MiB that travel back in the job's log: use a "
                      "shared artifact store (artifacts 'shared')", flush=True)
                return 1
            sys.stdout.flush()
            text = base64.b64encode(data).decode()
            lines = [text[i:i + _BUNDLE_LINE_CHARS] for i in range(0, len(text), _BUNDLE_LINE_CHARS)]
            sys.stdout.write(f"{BUNDLE_BEGIN} {len(data)} {hashlib.sha256(data).hexdigest()}\n"
                             + "\n".join(lines) + f"\n{BUNDLE_END}\n")
            sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(job_main(sys.argv[1:]))
