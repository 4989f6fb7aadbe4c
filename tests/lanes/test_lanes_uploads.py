"""Uploaded archives on a real token server: model uploads (POST /models) and recipe uploads
(POST /engines) with every kind of escaping entry are a 400 naming the entry, and nothing is
written outside; a well-formed model archive is unpacked and served back."""
from __future__ import annotations

import io
import json
import stat
import tarfile
import zipfile
from pathlib import Path
from typing import Callable, Iterator

import pytest

from lanes_helpers import NOOP_ENGINE, ROOT, client, lanes_server
from live_server import new_sandbox

MAX_ENTRIES = 50
MAX_UNPACKED_MB = 1


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    with lanes_server(tmp_path_factory.mktemp("uploads"), "--max-archive-entries",
                      str(MAX_ENTRIES), "--max-unpacked-mb", str(MAX_UNPACKED_MB)) as started:
        yield started


# -- archive builders: each returns (bytes, the entry the refusal must name) -------------------

def _zip(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for info, data in entries:
            archive.writestr(info, data)
    return buf.getvalue()


def _zip_link(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


def _zip_device(name: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFCHR | 0o666) << 16
    return info, b""


def _tar(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as archive:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            archive.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return buf.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o644
    return info


def _cases(outside: Path) -> dict[str, tuple[bytes, str]]:
    evil = str(outside / "evil.txt")
    ok = ("model.json", b"{}")
    zero = b"\0" * (MAX_UNPACKED_MB * (1 << 20) + 1)   # deflates to about 1 KiB
    return {
        "zip absolute": (_zip([ok, (evil, b"x")]), evil.lstrip("/")),
        "zip dotdot": (_zip([ok, ("../../evil.txt", b"x")]), "../../evil.txt"),
        "zip symlink out": (_zip([ok, _zip_link("link", "../../outside")]), "link"),
        "zip absolute symlink": (_zip([ok, _zip_link("abs", str(outside))]), "abs"),
        "zip device": (_zip([ok, _zip_device("dev")]), "dev"),
        "zip too many entries": (_zip([(f"f{i}.txt", b"x") for i in range(MAX_ENTRIES + 1)]),
                                 f"f{MAX_ENTRIES}.txt"),
        "zip bomb": (_zip([ok, ("zeros.bin", zero)]), "zeros.bin"),
        "tar absolute": (_tar([(_member(evil), b"x")]), evil),
        "tar dotdot": (_tar([(_member("a/../../evil.txt"), b"x")]), "a/../../evil.txt"),
        "tar symlink out": (_tar([(_member("s", tarfile.SYMTYPE, "../outside"), b"")]), "s"),
        "tar absolute symlink": (_tar([(_member("s", tarfile.SYMTYPE, "/etc"), b"")]), "s"),
        "tar hardlink out": (_tar([(_member("h", tarfile.LNKTYPE, "../../outside/private.csv"),
                                    b"")]), "h"),
        "tar absolute hardlink": (_tar([(_member("h", tarfile.LNKTYPE, "/etc/passwd"), b"")]), "h"),
        "tar device": (_tar([(_member("dev", tarfile.CHRTYPE), b"")]), "dev"),
        "tar fifo": (_tar([(_member("fifo", tarfile.FIFOTYPE), b"")]), "fifo"),
        "tar link chain": (_tar([(_member("d", tarfile.DIRTYPE), b""),
                                 (_member("d/s", tarfile.SYMTYPE, ".."), b""),
                                 (_member("d/s/t", tarfile.SYMTYPE, ".."), b""),
                                 (_member("d/s/t/evil.txt"), b"x")]), "d/s/t"),
        "tar too many entries": (_tar([(_member(f"f{i}"), b"x") for i in range(MAX_ENTRIES + 1)]),
                                 f"f{MAX_ENTRIES}"),
        "tar bomb": (_tar([(_member("zeros.bin"), zero)]), "zeros.bin"),
    }


def _snapshot(*folders: Path) -> set[Path]:
    return {p for folder in folders for p in folder.rglob("*")}


def _post_model(c, archive: bytes, run_id: str = "run-1"):
    return c.post("/models", files=[
        ("model", (None, json.dumps({"name": "m", "experimentRunId": run_id}),
                   "application/json")),
        ("modelArtifact", ("model.tar.gz", archive, "application/octet-stream"))])


def _post_engine(c, archive: bytes):
    return c.post("/engines", files=[
        ("engine", (None, json.dumps({"name": "r", "type": "Python"}), "application/json")),
        ("defaultArtifact", ("recipe.tar.gz", archive, "application/octet-stream"))])


@pytest.mark.parametrize("post", [_post_model, _post_engine], ids=["model", "recipe"])
def test_every_escaping_or_oversized_archive_is_refused_naming_the_entry(
        capped: dict, post: Callable) -> None:
    server, outside = capped["server"], capped["outside"]
    failures = []
    with client(server, new_sandbox(), token=ROOT) as c:
        for name, (archive, entry) in _cases(outside).items():
            before = _snapshot(capped["outside"], capped["root"])
            response = post(c, archive)
            detail = response.json().get("detail", "")
            if response.status_code != 400 or entry not in detail:
                failures.append(f"{name}: {response.status_code} {detail}")
            assert _snapshot(capped["outside"], capped["root"]) == before, name
            assert not (capped["base"] / "evil.txt").exists() and \
                not (outside / "evil.txt").exists(), name
        kinds = "/models" if post is _post_model else "/engines"
        assert c.get(kinds).json()["_page"]["totalCount"] == 0   # nothing registered
    assert not failures, "\n".join(failures)
    # Nothing half-unpacked stays in the home either.
    models = server.home / "artifacts" / "models"
    assert not models.exists() or not any(models.iterdir())


def test_a_model_archive_is_unpacked_inside_its_folder_and_served_back(capped: dict) -> None:
    server = capped["server"]
    archive = _tar([(_member("model/model.json"), b'{"rows": 2}'),
                    (_member("model/link.json", tarfile.SYMTYPE, "model.json"), b"")])
    with client(server, new_sandbox(), token=ROOT) as c:
        engine = c.post("/engines", json=NOOP_ENGINE).json()
        instance = c.post("/mlInstances", json={"name": "m", "engineId": engine["id"]}).json()
        exp = c.post("/experiments", json={"name": "m", "mlInstanceId": instance["id"]}).json()
        run = c.post(f"/experiments/{exp['id']}/runs", json={"mode": "train"}).json()
        created = _post_model(c, archive, run["id"])
        assert created.status_code == 201, created.text
        model = created.json()
        folder = server.home / "artifacts" / "models" / model["id"]
        assert model["modelArtifactUri"] == folder.as_uri()
        assert (folder / "model" / "model.json").read_text() == '{"rows": 2}'
        served = c.get(f"/models/{model['id']}/artifact")
        assert served.status_code == 200
        with zipfile.ZipFile(io.BytesIO(served.content)) as zipped:
            assert "model/model.json" in zipped.namelist()
        # A file that is no archive is kept as it came.
        plain = c.post("/models", files=[
            ("model", (None, json.dumps({"name": "p", "experimentRunId": run["id"]}),
                       "application/json")),
            ("modelArtifact", ("weights.bin", b"\x00\x01plain", "application/octet-stream"))])
        assert plain.status_code == 201, plain.text
        assert c.get(f"/models/{plain.json()['id']}/artifact").content == b"\x00\x01plain"


def test_a_recipe_named_by_a_server_path_must_lie_under_the_roots(capped: dict) -> None:
    import shutil

    fixture = Path(__file__).resolve().parents[1] / "recipes" / "fixtures" / "classify_functions"
    outside = capped["outside"] / "recipe"
    inside = capped["root"] / "recipe"
    shutil.copytree(fixture, outside)
    shutil.copytree(fixture, inside)

    def engine(location: str) -> dict:
        return {"name": "recipe", "type": "Python",
                "artifacts": {"default": {"image": {"location": location}}}}

    with client(capped["server"], new_sandbox(), token=ROOT) as c:
        for location in (str(outside), outside.as_uri(), str(capped["root"] / ".." / "outside" /
                                                             "recipe")):
            refused = c.post("/engines", json=engine(location))
            assert refused.status_code == 403, (location, refused.text)
            assert "artifacts.default.image.location" in refused.json()["detail"]
            assert str(capped["root"]) in refused.json()["detail"]
        created = c.post("/engines", json=engine(str(inside)))
        assert created.status_code == 201, created.text
        doc = created.json()
        # Read back and written again as is: the location is now in the home's recipe store.
        again = c.put(f"/engines/{doc['id']}", json=doc)
        assert again.status_code == 200, again.text
        moved = c.put(f"/engines/{doc['id']}", json=engine(str(outside)))
        assert moved.status_code == 403
