"""``GET /``: the web page (``api/web``: one HTML file, three scripts, one stylesheet; no build step,
nothing fetched from outside the server). The page asks for an API key and calls ``/v1`` with it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import FileResponse

WEB_DIR = Path(__file__).resolve().parents[1] / "web"

#: Scripts only from this server; inline styles are allowed because the SVG drawings carry them.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")

router = APIRouter(include_in_schema=False)


def _file(name: str) -> FileResponse:
    return FileResponse(WEB_DIR / name, headers={"Cache-Control": "no-cache",
                                                 "Content-Security-Policy": CSP,
                                                 "X-Content-Type-Options": "nosniff"})


@router.get("/")
def index() -> FileResponse:
    """The single page."""
    return _file("index.html")


@router.get("/web/{name}")
def asset(name: Literal["app.js", "charts.js", "experiments.js", "timelines.js", "app.css"]) -> FileResponse:
    """The page's scripts and stylesheet (only these names)."""
    return _file(name)
