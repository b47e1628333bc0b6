"""Bearer-token checks shared by the scheduler's and the workers' HTTP servers."""

from __future__ import annotations

import hmac


def bearer_matches(header: str | None, expected: str) -> bool:
    """Whether an Authorization header carries `Bearer <expected>` (compared in constant time)."""
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())
