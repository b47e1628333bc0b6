"""The API's JSON response class: orjson straight to bytes, no second validation pass."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse


class JSONBytesResponse(JSONResponse):
    """`application/json` rendered by orjson (FastAPI's own ORJSONResponse is deprecated).

    A JSONResponse subclass so that FastAPI documents each route's `response_model`.
    """

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)
