"""The order a worker claims from its queues.

Smooth weighted round robin (as in nginx) picks the queue a claim tries first: over any
`sum(weights)` consecutive claims each queue comes first exactly `weight` times, spread
out rather than in runs, so with every queue backlogged a queue's share of the claims
follows its weight. The other queues follow in configured order after the first, so free
slots never idle while any served queue has work. Equal weights are a plain rotation.
"""

from __future__ import annotations

from collections.abc import Mapping


class ClaimOrder:
    def __init__(self, weights: Mapping[str, int]) -> None:
        if not weights or min(weights.values()) < 1:
            raise ValueError("at least one queue, every weight >= 1")
        self.queues = list(weights)
        self._weights = [weights[q] for q in self.queues]
        self._total = sum(self._weights)
        self._current = [0] * len(self.queues)

    def next(self) -> list[str]:
        """The queues in the order the next claim should try them."""
        for i, weight in enumerate(self._weights):
            self._current[i] += weight
        first = max(range(len(self.queues)), key=lambda i: (self._current[i], -i))
        self._current[first] -= self._total
        return self.queues[first:] + self.queues[:first]
