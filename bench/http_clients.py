"""Client CPU of one POST /api/v1/tasks with each HTTP library: how the SDK's transports were chosen.

    python -m bench.http_clients [--requests 2000] [--runs 3]

A private Redis and the scheduler run in their own processes; this process sends sequential
single submits through each library (one keep-alive connection) and measures its own CPU time
per request (`time.process_time`), which the server's speed does not change. Medians of runs.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson

import shoal
from bench.submit import Stack
from shoal.sdk import http_wire

BODY = orjson.dumps({"name": "noop", "queue": "bench"})
HEADERS = {"Content-Type": "application/json"}
CORE_HEADERS = [(b"Content-Type", b"application/json")]
PATH = "/api/v1/tasks"


def sync_cost(call: Callable[[], object], n: int) -> float:
    for _ in range(min(200, n)):
        call()
    started = time.process_time()
    for _ in range(n):
        call()
    return (time.process_time() - started) / n * 1e6


async def async_cost(call: Callable[[], Awaitable[object]], n: int) -> float:
    for _ in range(min(200, n)):
        await call()
    started = time.process_time()
    for _ in range(n):
        await call()
    return (time.process_time() - started) / n * 1e6


def sync_libraries(url: str, port: int) -> dict[str, Callable[[], object]]:
    import httpcore
    import httpx
    import urllib3

    conn = http.client.HTTPConnection("127.0.0.1", port)

    def stdlib() -> object:
        conn.request("POST", PATH, body=BODY, headers=HEADERS)
        return orjson.loads(conn.getresponse().read())

    wire = http_wire.Connection("127.0.0.1", port, timeout=30)

    def lean() -> object:
        wire.request("POST", PATH, BODY, HEADERS)
        return orjson.loads(wire.getresponse().read())

    pool = urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=1)
    core = httpcore.ConnectionPool()
    client = httpx.Client(base_url=url)
    sdk = shoal.Client(url, token="")
    return {
        "http.client": stdlib,
        "shoal.sdk.http_wire": lean,
        "shoal.Client (http_wire pool)": lambda: sdk.submit("noop"),
        "urllib3": lambda: orjson.loads(pool.request("POST", PATH, body=BODY, headers=HEADERS).data),
        "httpcore": lambda: orjson.loads(
            core.request("POST", url + PATH, content=BODY, headers=CORE_HEADERS).content
        ),
        "httpx": lambda: orjson.loads(client.post(PATH, content=BODY, headers=HEADERS).content),
    }


async def async_libraries(url: str, n: int) -> dict[str, float]:
    import aiohttp
    import httpx

    costs: dict[str, float] = {}
    async with aiohttp.ClientSession(url) as session:

        async def raw_aiohttp() -> object:
            async with session.post(PATH, data=BODY, headers=HEADERS) as response:
                return orjson.loads(await response.read())

        costs["aiohttp"] = await async_cost(raw_aiohttp, n)
    async with shoal.AsyncClient(url, token="") as sdk:
        costs["shoal.AsyncClient (aiohttp)"] = await async_cost(lambda: sdk.submit("noop"), n)
    async with httpx.AsyncClient(base_url=url) as client:

        async def raw_httpx() -> object:
            return orjson.loads((await client.post(PATH, content=BODY, headers=HEADERS)).content)

        costs["httpx.AsyncClient"] = await async_cost(raw_httpx, n)
    return costs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    samples: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="shoal-bench-http-") as tmp:
        stack = Stack(Path(tmp))
        try:
            for _ in range(args.runs):
                for name, call in sync_libraries(stack.api_url, stack.api_port).items():
                    samples.setdefault(name, []).append(sync_cost(call, args.requests))
                for name, cost in asyncio.run(async_libraries(stack.api_url, args.requests)).items():
                    samples.setdefault(name, []).append(cost)
                stack.redis.delete(f"{{{stack.namespace}}}:ready:bench")
        finally:
            stack.close()
    print(f"client CPU per POST {PATH} (median of {args.runs} runs of {args.requests}):")
    for name, values in samples.items():
        print(f"  {name:34s} {statistics.median(values):6.0f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
