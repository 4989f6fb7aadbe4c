"""The API's documentation pages, Swagger UI (`/data/sensei/docs`) and ReDoc (`/data/sensei/redoc`),
served with their scripts from this server: FastAPI's defaults load them from a CDN, which leaves
the pages blank offline or behind a firewall.

The assets come from the `fastapi-offline` package (MIT; Swagger UI 5 and ReDoc 2 bundles), a
dependency, so nothing is vendored here and nothing is fetched at run time.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.responses import HTMLResponse, RedirectResponse
from starlette.staticfiles import StaticFiles

from ..errors import ServerConfigError

ASSET_PACKAGE = "fastapi_offline"
ASSET_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
# Swagger UI asks validator.swagger.io for a badge by default: a request off this machine.
SWAGGER_PARAMETERS = {"validatorUrl": None}
# The pages may load only from this server (ReDoc's sidebar logo is on a CDN: the browser refuses
# it without a request and ReDoc hides it); inline scripts are FastAPI's page set-up, blob: workers
# ReDoc's search.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline' blob:; "
                           "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
                           "font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'")


def asset_folder() -> Path:
    """The folder holding the pages' scripts and styles; a clear error when it is missing."""
    try:
        folder = Path(str(resources.files(ASSET_PACKAGE) / "static"))
    except ModuleNotFoundError:
        folder = None
    missing = [name for name in ASSET_FILES if folder is None or not (folder / name).is_file()]
    if missing:
        raise ServerConfigError(
            f"The API docs' assets ({', '.join(missing)}) are not installed: the package "
            f"{ASSET_PACKAGE.replace('_', '-')!r} provides them (pip install -e . installs it)")
    return folder


def mount_docs(app: FastAPI, base: str, openapi_url: str) -> None:
    """Swagger UI at `base`/docs (and `base` itself redirects there) and ReDoc at `base`/redoc,
    their assets at `base`/docs/assets."""
    folder = asset_folder()
    assets = f"{base}/docs/assets"
    title = app.title
    app.mount(assets, StaticFiles(directory=folder), name="docs-assets")

    def local_only(page: HTMLResponse) -> HTMLResponse:
        page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return page

    @app.get(base, include_in_schema=False)
    async def api_root() -> RedirectResponse:   # the address `run serve` prints, opened in a browser
        return RedirectResponse(f"{base}/docs")

    @app.get(f"{base}/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return local_only(get_swagger_ui_html(
            openapi_url=openapi_url, title=f"{title} · Swagger UI",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css", swagger_favicon_url=f"{assets}/favicon.png",
            swagger_ui_parameters=SWAGGER_PARAMETERS))

    @app.get(f"{base}/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return local_only(get_redoc_html(
            openapi_url=openapi_url, title=f"{title} · ReDoc",
            redoc_js_url=f"{assets}/redoc.standalone.js", redoc_favicon_url=f"{assets}/favicon.png",
            with_google_fonts=False))
