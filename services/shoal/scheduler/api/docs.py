"""/docs: Swagger UI with its assets served by the scheduler itself, so it works air-gapped.

FastAPI's own /docs page loads Swagger UI from a public CDN, which a cluster without internet
access (or a browser behind a strict proxy) cannot reach. The assets come from the
`swagger-ui-bundle-v2` package (Swagger UI 5, which reads the OpenAPI 3.1 document FastAPI
writes) and are served from /docs/assets/, a fixed list of files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import FileResponse, HTMLResponse, Response
from swagger_ui_bundle import swagger_ui_path

from shoal.core.errors import NotFound

DOCS_URL = "/docs"
ASSETS_URL = f"{DOCS_URL}/assets"
ASSETS: dict[str, str] = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
ASSETS_DIR = Path(str(swagger_ui_path))
# The files change only with the package version, and the page names them by version.
_CACHE = {"Cache-Control": "public, max-age=86400"}

router = APIRouter(include_in_schema=False)


@router.get(DOCS_URL)
async def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "").rstrip("/")
    version = ASSETS_DIR.name  # swagger-ui-<version>: a new package version is a new URL
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js?v={version}",
        swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css?v={version}",
        swagger_favicon_url=f"{root}{ASSETS_URL}/favicon-32x32.png?v={version}",
        swagger_ui_parameters=request.app.swagger_ui_parameters,
    )


@router.get(f"{ASSETS_URL}/{{name}}")
async def swagger_asset(name: Annotated[str, PathParam(max_length=64)]) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"no documentation asset {name!r}")
    return FileResponse(ASSETS_DIR / name, media_type=media_type, headers=_CACHE)
