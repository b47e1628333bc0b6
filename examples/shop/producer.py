"""Places an order: submits the shop's tasks by reference and waits for their results.

SHOAL_API_URL=http://127.0.0.1:8000 python -m shop.producer ORDER-1 1999
"""

from __future__ import annotations

import sys

import shoal
from shop.tasks import confirm, price, receipt_digest, reserve


def place_order(client: shoal.Client, order_id: str, cents: int) -> str:
    total: int = client.run(price, cents, 0.2)  # submit and wait: one request
    with client.batch() as batch:  # written in one atomic step, with a dependency
        reserved = batch.submit(reserve, "sku-42", in_stock=3)
        digest = batch.submit(receipt_digest.options(depends_on=[reserved]), f"{order_id}:{total}")
        message = batch.submit(confirm.options(depends_on=[digest], priority=5), order_id, total)
    return message.result(timeout=60)  # a str, or shoal.TaskFailed with the remote traceback


def main(argv: list[str]) -> int:
    order_id, cents = argv[0], int(argv[1])
    with shoal.Client() as client:  # SHOAL_API_URL and SHOAL_API_TOKEN from the environment
        try:
            print(place_order(client, order_id, cents))
        except shoal.TaskFailed as failed:
            print(f"order {order_id} not placed: {failed.error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
