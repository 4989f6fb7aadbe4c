"""Starting the API server: the bind policy, tokens, and uvicorn."""
from __future__ import annotations

from .app import ServerSettings
from .auth import ENV_TOKENS, check_bind, parse_tokens

__all__ = ["ENV_TOKENS", "check_bind", "parse_tokens", "serve"]


def serve(settings: ServerSettings, host: str, port: int, log_level: str = "info") -> None:
    check_bind(host, settings.tokens)
    import uvicorn

    from .app import create_app

    app = create_app(settings)
    registry = app.state.registry
    roots = registry.data_roots
    print(f"Serving the Sensei ML API at http://{host}:{port}/data/sensei "
          f"(home {settings.home.root}, store {registry.store.url}, data sets "
          f"{'under ' + roots.describe() if roots else 'anywhere'})", flush=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
    finally:
        registry.close()
