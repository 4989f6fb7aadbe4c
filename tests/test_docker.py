"""The Docker files, checked without a Docker engine: every COPY source exists, every entrypoint
and command names a real command, and the compose file stands up the API, a Ray head and a worker
on a PostgreSQL registry (the official image, its data in a volume)."""
from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
DOCKERFILES = sorted(DOCKER.glob("Dockerfile.*"))
COMPOSE = DOCKER / "docker-compose.yml"


def _project_scripts() -> set[str]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return set(data["project"].get("scripts", {}))


# Commands an image provides: the project's console scripts, and those of what it installs.
KNOWN_COMMANDS = _project_scripts() | {"ray", "python", "python3", "pip", "sh", "bash"}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        pending += stripped[:-1] + " " if stripped.endswith("\\") else stripped
        if not stripped.endswith("\\"):
            word, _, rest = pending.partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    return out


def _exec_form(args: str) -> list[str]:
    return json.loads(args) if args.startswith("[") else shlex.split(args)


def test_there_are_cpu_cuda_and_spark_images():
    assert {p.name for p in DOCKERFILES} >= {"Dockerfile.cpu", "Dockerfile.cuda", "Dockerfile.spark"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_copy_source_exists(dockerfile):
    copies = [args for word, args in instructions(dockerfile) if word in ("COPY", "ADD")]
    assert copies
    for args in copies:
        parts = [p for p in _exec_form(args) if not p.startswith("--")]
        for source in parts[:-1]:   # build context: the repository root
            assert list(REPO.glob(source)), f"{dockerfile.name}: COPY source {source!r} is missing"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_entrypoint_names_a_real_command(dockerfile):
    found = dict((w, a) for w, a in instructions(dockerfile) if w in ("ENTRYPOINT", "CMD"))
    command = _exec_form(found.get("ENTRYPOINT") or found["CMD"])
    assert command[0] in KNOWN_COMMANDS, f"{dockerfile.name}: unknown command {command[0]!r}"
    if command[0] == "run" and "CMD" in found:
        _check_run_arguments(_exec_form(found["CMD"]))


def _check_run_arguments(argv: list[str]) -> None:
    from runtime.cli.main import build_parser

    build_parser().parse_args(argv)   # exits (SystemExit) on an unknown subcommand or flag


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_has_the_api_a_ray_head_and_a_worker(compose):
    services = compose["services"]
    assert set(services) >= {"api", "ray-head", "ray-worker"}
    head = services["ray-head"]["command"]
    assert head[:2] == ["start", "--head"] and "--block" in head
    worker = services["ray-worker"]["command"]
    assert worker[0] == "start" and "ray-head:6379" in worker and "--block" in worker
    api_env = services["api"]["environment"]
    assert api_env["RAY_ADDRESS"] == "http://ray-head:8265" and api_env["MLRUNTIME_RUN_BACKEND"] == "ray"


def _runtime_services(compose) -> dict:
    """The services run from this project's image (the rest are official images)."""
    return {name: s for name, s in compose["services"].items() if "build" in s}


def test_compose_commands_are_real(compose):
    for name, service in _runtime_services(compose).items():
        entrypoint = service.get("entrypoint")
        assert entrypoint and entrypoint[0] in KNOWN_COMMANDS, f"{name}: {entrypoint!r}"
        if entrypoint[0] == "run":
            _check_run_arguments(service["command"])
        if entrypoint[0] == "ray":
            assert service["command"][0] == "start"


def test_compose_builds_from_existing_dockerfiles_and_publishes_on_loopback(compose):
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            context = (COMPOSE.parent / build["context"]).resolve()
            assert (context / build["dockerfile"]).is_file(), name
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    assert compose["services"]["ray-head"]["build"]["context"] == ".."


def test_compose_shares_one_runtime_home(compose):
    mounts = {name: [v for v in s.get("volumes", []) if v.startswith("runtime-home:")]
              for name, s in _runtime_services(compose).items()}
    assert set(mounts) == {"api", "ray-head", "ray-worker"}
    assert all(m == ["runtime-home:/var/lib/mlinstance-runtime"] for m in mounts.values()), mounts
    assert compose["services"]["api"]["environment"]["MLRUNTIME_RAY_ARTIFACTS"] == "shared"


def test_compose_registry_is_postgresql_in_a_volume(compose):
    """The postgres service: the official image, its data in a named volume, a health check the
    API waits for, published on loopback only; every runtime service's MLRUNTIME_DB names it."""
    from urllib.parse import urlsplit

    pg = compose["services"]["postgres"]
    assert pg["image"].split(":")[0] == "postgres" and "build" not in pg
    data = [v for v in pg["volumes"] if v.endswith(":/var/lib/postgresql/data")]
    assert data and data[0].split(":")[0] in compose["volumes"], pg["volumes"]
    check = pg["healthcheck"]["test"]
    assert check[0] == "CMD-SHELL" and check[1].startswith("pg_isready"), check
    assert all(str(p).startswith("127.0.0.1:") for p in pg.get("ports", []))
    env = pg["environment"]
    for name, service in _runtime_services(compose).items():
        url = urlsplit(service["environment"]["MLRUNTIME_DB"])
        assert url.scheme == "postgresql" and url.hostname == "postgres", (name, url)
        assert url.username == env["POSTGRES_USER"] and url.path == f"/{env['POSTGRES_DB']}"
        assert url.password == env["POSTGRES_PASSWORD"], name   # the same ${...} default
    assert compose["services"]["api"]["depends_on"]["postgres"] == {"condition": "service_healthy"}


def test_the_runtime_image_can_reach_postgresql():
    """The compose file's registry URL needs psycopg in the image: the postgres extra."""
    installs = [args for word, args in instructions(DOCKER / "Dockerfile.cpu")
                if word == "RUN" and "pip install" in args and "'.[" in args.replace('"', "'")]
    assert any("postgres" in args for args in installs), installs
