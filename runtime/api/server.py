"""Starting the API server: the bind policy, tokens, and uvicorn."""
from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from typing import Optional

from ..errors import ServerConfigError
from .app import ServerSettings

ENV_TOKENS = "MLRUNTIME_TOKENS"


def parse_tokens(flags: list[str], tokens_file: Optional[str] = None,
                 env: Optional[str] = None) -> dict[str, str]:
    """token -> user from `--token TOKEN[=USER]`, a JSON/YAML tokens file, and MLRUNTIME_TOKENS."""
    tokens: dict[str, str] = {}
    env = os.environ.get(ENV_TOKENS, "") if env is None else env
    for item in [*[e for e in env.split(",") if e.strip()], *flags]:
        token, _, user = item.strip().partition("=")
        if not token:
            raise ServerConfigError(f"Empty token in {item!r}: use --token TOKEN or TOKEN=USER")
        tokens[token] = user.strip() or "api-user"
    if tokens_file:
        path = Path(tokens_file)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ServerConfigError(f"Cannot read the tokens file {path}: {exc}") from exc
        try:
            if path.suffix.lower() in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except Exception as exc:
            raise ServerConfigError(f"The tokens file {path} is not valid: {exc}") from exc
        if not isinstance(data, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            raise ServerConfigError(f"The tokens file {path} must map each token to a user id")
        tokens.update(data)
    return tokens


def check_bind(host: str, tokens: dict[str, str]) -> None:
    """Without tokens the server is for this machine only: refuse any non-loopback address."""
    if tokens:
        return
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ServerConfigError(
            f"Refusing to listen on {host!r} without tokens: anyone who reaches it could read and "
            "change the registry. Configure tokens (--token TOKEN=USER, --tokens-file FILE or "
            f"{ENV_TOKENS}) or bind 127.0.0.1")


def serve(settings: ServerSettings, host: str, port: int, log_level: str = "info") -> None:
    check_bind(host, settings.tokens)
    import uvicorn

    from .app import create_app

    app = create_app(settings)
    registry = app.state.registry
    print(f"Serving the Sensei ML API at http://{host}:{port}/data/sensei "
          f"(home {settings.home.root}, store {registry.store.url})", flush=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
    finally:
        registry.close()
