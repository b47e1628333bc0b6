"""The asyncio HTTP transport, on aiohttp.

Chosen by measurement (bench/http_clients.py): one POST /api/v1/tasks costs the client
about 130-180 µs of CPU with aiohttp against 630-780 with httpx's AsyncClient and 420-500
with httpcore. aiohttp is imported only when an `AsyncClient` first sends something.
The session belongs to the event loop it was created on; the client makes one per loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import orjson

from shoal.errors import RequestTimeout, ShoalError
from shoal.sdk.answers import UNAVAILABLE_STATUSES, decode, encode, error_for
from shoal.sdk.calls import Call
from shoal.sdk.http import IDLE_KEEP_S, Endpoint, backoff_s

if TYPE_CHECKING:
    import aiohttp


class AsyncHttpTransport:
    """Sends `Call`s with one aiohttp session per event loop."""

    def __init__(self, endpoint: Endpoint, timeout_s: float, retries: int) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.retries = retries
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}

    def _session(self) -> aiohttp.ClientSession:
        import aiohttp

        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            for other in [other for other in self._sessions if other.is_closed()]:
                del self._sessions[other]
            connector = aiohttp.TCPConnector(keepalive_timeout=IDLE_KEEP_S, limit=0)
            session = aiohttp.ClientSession(
                connector=connector,
                headers=self.endpoint.headers,
                json_serialize=lambda value: orjson.dumps(value).decode(),
                auto_decompress=False,
            )
            self._sessions[loop] = session
        return session

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        session = self._sessions.pop(loop, None)
        if session is not None:
            await session.close()

    async def execute(self, call: Call) -> Any:
        import aiohttp

        body = None if call.body is None else encode(call.body)
        headers = {"Content-Type": "application/json"} if body is not None else None
        url = self.endpoint.url + call.path
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.timeout_s, sock_read=self.timeout_s + call.wait_s
        )
        session = self._session()
        attempt = 0
        while True:
            try:
                async with session.request(
                    call.method, url, params=call.query, data=body, headers=headers, timeout=timeout
                ) as response:
                    data = await response.read()
                    status = response.status
                    content_type = response.headers.get("Content-Type", "")
                    reason = response.reason or ""
            except TimeoutError as error:
                waited = self.timeout_s + call.wait_s
                raise RequestTimeout(
                    f"the Shoal API at {self.endpoint.url} did not answer within {waited:g} s"
                ) from error
            except aiohttp.ClientConnectorError as error:  # nothing was sent: always safe again
                if attempt < self.retries:
                    await asyncio.sleep(backoff_s(attempt))
                    attempt += 1
                    continue
                raise self.endpoint.unreachable(error) from error
            except (aiohttp.ClientError, OSError) as error:
                if call.safe and attempt < self.retries:
                    await asyncio.sleep(backoff_s(attempt))
                    attempt += 1
                    continue
                raise self.endpoint.unreachable(error) from error
            if status >= 400:
                if status in UNAVAILABLE_STATUSES and call.safe and attempt < self.retries:
                    await asyncio.sleep(backoff_s(attempt))
                    attempt += 1
                    continue
                raise error_for(status, content_type, data, reason)
            value = decode(content_type, data)
            return value[call.unwrap] if call.unwrap else value

    @asynccontextmanager
    async def stream(
        self,
        path: str,
        query: Mapping[str, Any] | None,
        headers: Mapping[str, str],
        read_timeout_s: float | None,
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """A streamed GET: yields an async iterator of the answer's lines."""
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout_s, sock_read=read_timeout_s)
        try:
            response = await self._session().get(
                self.endpoint.url + path, params=query, headers=dict(headers), timeout=timeout
            )
        except (aiohttp.ClientError, OSError) as error:
            raise self.endpoint.unreachable(error) from error
        try:
            if response.status >= 400:
                data = await response.read()
                raise error_for(
                    response.status, response.headers.get("Content-Type", ""), data, response.reason or ""
                )
            yield _lines(response, self.endpoint)
        finally:
            response.close()


async def _lines(response: aiohttp.ClientResponse, endpoint: Endpoint) -> AsyncIterator[bytes]:
    import aiohttp

    try:
        while True:
            line = await response.content.readline()
            if not line:
                return
            yield line
    except ShoalError:
        raise
    except TimeoutError as error:
        raise RequestTimeout(f"the event stream from {endpoint.url} went silent") from error
    except (aiohttp.ClientError, OSError) as error:
        raise endpoint.unreachable(error) from error
