"""The ``/docs`` page: Swagger UI from the installed ``swagger-ui-py`` package
(the ``docs`` extra), served by servekit itself, so the page works with no
network: nothing is loaded from elsewhere, and the page's own settings turn
off what would call out (the online validator badge)."""

from __future__ import annotations

import html
import importlib.util
from functools import cache
from pathlib import Path

from servekit.errors import ServekitError

# the files of the package the page loads, and their content types
ASSETS = {
    "swagger-ui.css": b"text/css; charset=utf-8",
    "swagger-ui-bundle.js": b"application/javascript; charset=utf-8",
    "favicon-32x32.png": b"image/png",
    "favicon-16x16.png": b"image/png",
}
PACKAGE = "swagger_ui"  # PyPI: swagger-ui-py
INSTALL = "pip install 'servekit[docs]' (swagger-ui-py)"


class DocsUnavailable(ServekitError):
    """The page's files are not installed (501)."""

    status = 501


@cache
def asset_folder() -> Path | None:
    """Where the installed package keeps Swagger UI's files (found without importing it)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


@cache
def asset(name: str) -> bytes:
    """One file of the page, read once; only the files in :data:`ASSETS`."""
    folder = asset_folder()
    if folder is None:
        raise DocsUnavailable(f"the /docs page needs Swagger UI's files: {INSTALL}")
    return (folder / name).read_bytes()


def page(title: str, document_url: str = "openapi.json", assets: str = "docs/") -> bytes:
    """The HTML of the page; it loads the document of its own port."""
    if asset_folder() is None:
        raise DocsUnavailable(f"the /docs page needs Swagger UI's files: {INSTALL}")
    text = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<link rel="icon" type="image/png" href="{assets}favicon-32x32.png" sizes="32x32">
<link rel="stylesheet" href="{assets}swagger-ui.css">
<style>body {{ margin: 0; }} .swagger-ui .topbar {{ display: none; }}</style>
</head>
<body>
<div id="api"></div>
<script src="{assets}swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({{
  url: new URL("{document_url}", window.location.href).href,
  dom_id: "#api",
  deepLinking: true,
  validatorUrl: null,
  docExpansion: "list",
  tryItOutEnabled: false,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout"
}});
</script>
</body>
</html>
"""
    return text.encode()


__all__ = ["ASSETS", "DocsUnavailable", "asset", "asset_folder", "page"]
