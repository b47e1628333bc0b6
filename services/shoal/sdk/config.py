"""Where a client finds the API: arguments first, then SHOAL_API_URL / SHOAL_API_TOKEN."""

from __future__ import annotations

import os

DEFAULT_API_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_RETRIES = 3


def api_url(url: str | None) -> str:
    return (url or os.environ.get("SHOAL_API_URL", "").strip() or DEFAULT_API_URL).rstrip("/")


def api_token(token: str | None) -> str | None:
    """The token to send: `token` when given ("" sends none), else SHOAL_API_TOKEN."""
    if token is None:
        token = os.environ.get("SHOAL_API_TOKEN", "").strip()
    return token or None
