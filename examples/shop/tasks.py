"""The shop's tasks: plain functions that Shoal's workers run (SHOAL_TASK_MODULES=shop.tasks)."""

from __future__ import annotations

import hashlib

import shoal


@shoal.task(queue="orders", max_retries=5)  # a plain function: runs in the worker's thread pool
def price(cents: int, tax_rate: float) -> int:
    if cents < 0:
        raise shoal.Fail("a price cannot be negative")  # fail for good, no retries
    return round(cents * (1 + tax_rate))


@shoal.task(queue="orders")  # async: runs on the worker's event loop
async def confirm(order_id: str, total_cents: int) -> str:
    return f"order {order_id}: {total_cents / 100:.2f} EUR"


@shoal.task(kind="process", timeout_s=60)  # CPU-bound: runs in the worker's process pool
def receipt_digest(text: str, rounds: int = 10_000) -> str:
    digest = text.encode()
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


@shoal.task(queue="orders")
async def reserve(sku: str, in_stock: int) -> str:
    if in_stock <= 0:
        raise shoal.Retry(delay_s=5, message=f"{sku} is out of stock")  # again in 5 s (an attempt)
    return f"{sku} reserved"
