"""Every Redis key name Shoal uses, built from one hash-tagged prefix.

The `{namespace}` hash tag puts all keys of a deployment in one cluster slot, so
the multi-key Lua scripts also run on Redis Cluster.
"""

from __future__ import annotations


class Keys:
    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.prefix = "{" + namespace + "}"
        p = self.prefix
        self.scheduled = f"{p}:scheduled"
        self.leases = f"{p}:leases"
        self.workers = f"{p}:workers"
        self.queues = f"{p}:queues"
        self.names = f"{p}:names"
        self.vclock = f"{p}:vclock"
        self.stats_done = f"{p}:stats:done"
        self.stats_samples = f"{p}:stats:samples"
        self.events_stream = f"{p}:events"
        self.events_channel = f"{p}:events"
        self.leader = f"{p}:leader"
        self.scaling_history = f"{p}:scaling"
        self.all_tasks = f"{p}:all"

    def task(self, task_id: str) -> str:
        return f"{self.prefix}:task:{task_id}"

    def dependents(self, task_id: str) -> str:
        return f"{self.prefix}:deps:{task_id}"

    def history(self, task_id: str) -> str:
        return f"{self.prefix}:hist:{task_id}"

    def ready(self, queue: str) -> str:
        return f"{self.prefix}:ready:{queue}"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}:worker:{worker_id}"

    def worker_tasks(self, worker_id: str) -> str:
        return f"{self.prefix}:wtasks:{worker_id}"

    def state(self, state: str) -> str:
        return f"{self.prefix}:state:{state}"

    def idempotency(self, key: str) -> str:
        return f"{self.prefix}:idem:{key}"

    def depth(self, queue: str) -> str:
        return f"{self.prefix}:depth:{queue}"

    def queue_counts(self, queue: str) -> str:
        """Hash of the queue's running and scheduled task counts (kept by the scripts)."""
        return f"{self.prefix}:qcount:{queue}"

    def stats_bucket(self, bucket: int) -> str:
        return f"{self.prefix}:stats:done:{bucket}"

    def wake(self, queue: str) -> str:
        return f"{self.prefix}:wake:{queue}"

    def pattern(self) -> str:
        """Glob matching every key of this namespace (for clean-up in tests and tools)."""
        return f"{self.prefix}*"
