"""Shared pieces of the lanes suite: scoped tokens, the token server (runs are awaited with
`waiting.wait_run`)."""
from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))

from live_server import LiveServer, live_server, sensei_client  # noqa: E402

ORG = "LANES@AdobeOrg"
ALICE, BOB, ROOT = "alice-token", "bob-token", "root-token"
TOKENS = {
    ALICE: {"user": "alice@example.com", "org": ORG, "sandboxes": ["sbx1", "sbx2"]},
    BOB: {"user": "bob@example.com", "org": ORG, "sandboxes": ["bob"]},
    ROOT: "root@example.com",   # a plain string: any org, any sandbox
}
NOOP_ENGINE = {"name": "noop", "type": "Python",
               "artifacts": {"default": {"image": {"location": "noop", "name": "noop",
                                                   "packagingType": "egg"}}}}


@contextmanager
def lanes_server(base: Path, *extra: str) -> Iterator[dict]:
    """A token server whose data root is `root/`; `outside/` holds a file it must not reach."""
    root, outside = base / "root", base / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "train.csv").write_text("a,b\n1,2\n3,4\n")
    (outside / "private.csv").write_text("a,b\n5,6\n")
    (root / "escape.csv").symlink_to(outside / "private.csv")   # a link inside pointing out
    (root / "outdir").symlink_to(outside, target_is_directory=True)
    tokens_file = base / "tokens.json"
    tokens_file.write_text(json.dumps(TOKENS))
    with live_server(base / "home", "--tokens-file", str(tokens_file),
                     "--data-root", str(root), *extra) as server:
        yield {"server": server, "root": root, "outside": outside, "base": base}


def client(server: LiveServer, sandbox: str, token: str = ALICE, org: str = ORG) -> httpx.Client:
    return sensei_client(server.api_url, sandbox, token=token, org=org)


def instance_body(engine_id: str, **params: str) -> dict:
    train = [{"key": k, "value": v} for k, v in params.items()]
    return {"name": "lanes", "engineId": engine_id,
            "tasks": [{"name": "train", "parameters": train}]}
