"""The clients `task.submit()` and `task.asubmit()` use when none is named.

Made on first use from the environment (SHOAL_API_URL, SHOAL_API_TOKEN), or set with
`shoal.set_default_client(...)`. The async default is one client per event loop.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shoal.sdk.aclient import AsyncClient
    from shoal.sdk.client import Client

_lock = threading.Lock()
_client: Client | None = None
_async_client: AsyncClient | None = None
_async_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncClient] = (
    weakref.WeakKeyDictionary()
)


def default_client() -> Client:
    """The client `task.submit()` uses."""
    global _client
    with _lock:
        if _client is None:
            from shoal.sdk.client import Client

            _client = Client()
        return _client


def default_async_client() -> AsyncClient:
    """The async client `task.asubmit()` uses: the one set, else one per running event loop."""
    if _async_client is not None:
        return _async_client
    loop = asyncio.get_running_loop()
    with _lock:
        client = _async_per_loop.get(loop)
        if client is None:
            from shoal.sdk.aclient import AsyncClient

            client = _async_per_loop[loop] = AsyncClient()
        return client


def set_default_client(client: Client | AsyncClient | None) -> None:
    """Make `client` the one `task.submit()` (a `Client`) or `task.asubmit()` (an `AsyncClient`) uses.

    None forgets both: the next submission makes new ones from the environment.
    """
    global _client, _async_client
    from shoal.sdk.aclient import AsyncClient
    from shoal.sdk.client import Client

    with _lock:
        if client is None:
            _client = _async_client = None
            _async_per_loop.clear()
        elif isinstance(client, Client):
            _client = client
        elif isinstance(client, AsyncClient):
            _async_client = client
        else:
            raise TypeError(f"set_default_client takes a shoal.Client or shoal.AsyncClient, not {client!r}")
