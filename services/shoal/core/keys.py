"""Every Redis key name Shoal uses: the one schema that Python and the Lua scripts share.

All names of a namespace start with the hash tag `{namespace}`, so they live in one Redis
Cluster slot and a script may touch any of them. The scripts never spell a key name:
`shoal.core.scripts` generates a Lua prelude from this module (`FIXED` becomes `K_<NAME>`
bound to `KEYS[i]`, each entry of `PER_ID` a function `K_<NAME>(id)`), and a test checks
that the names the prelude builds are the ones `Keys` builds.
"""

from __future__ import annotations

# The namespace's fixed keys, in the order every transition script receives them as
# KEYS[1..n]: attribute of `Keys` (and Lua name, upper-cased) -> suffix after the prefix.
FIXED: tuple[tuple[str, str], ...] = (
    ("scheduled", "scheduled"),
    ("leases", "leases"),
    ("workers", "workers"),
    ("queues", "queues"),
    ("names", "names"),
    ("vclock", "vclock"),
    ("events", "events"),
    ("all_tasks", "all"),
    ("stats_samples", "stats:samples"),
    ("paused_queues", "paused"),  # hash queue -> paused since (ms): the claim skips those queues
)

# Keys named after one id (a task, worker, queue, state, bucket...): method of `Keys` (and
# Lua function, upper-cased) -> suffix template; "{}" is the id.
PER_ID: tuple[tuple[str, str], ...] = (
    ("task", "task:{}"),
    ("dependents", "deps:{}"),
    ("history", "hist:{}"),
    ("ready", "ready:{}"),
    ("worker", "worker:{}"),
    ("worker_tasks", "wtasks:{}"),
    ("state", "state:{}"),
    ("idempotency", "idem:{}"),
    ("depth", "depth:{}"),
    ("queue_counts", "qcount:{}"),
    ("stats_bucket", "stats:done:{}"),
    ("schedule", "sched:{}"),
    ("bulk_job", "bulk:{}"),
    ("task_logs", "logs:{}"),
)

# Pub/sub channels are not keys, but their names follow the same schema.
CHANNELS: tuple[tuple[str, str], ...] = (
    ("events_channel", "events"),
    ("wake", "wake:{}"),
)

_TEMPLATES = dict(PER_ID + CHANNELS)


class Keys:
    """The names of one namespace's keys (`{namespace}:<suffix>`)."""

    scheduled: str
    leases: str
    workers: str
    queues: str
    names: str
    vclock: str
    events: str
    all_tasks: str
    stats_samples: str
    paused_queues: str

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.prefix = "{" + namespace + "}"
        for attr, suffix in FIXED:
            setattr(self, attr, self._name(suffix))
        self.events_stream = self.events
        self.events_channel = self._name(dict(CHANNELS)["events_channel"])
        self.stats_done = self._name("stats:done")  # prefix of the per-bucket keys
        self.leader = self._name("leader")
        self.scaling_history = self._name("scaling")

    def _name(self, suffix: str) -> str:
        return f"{self.prefix}:{suffix}"

    def _per_id(self, kind: str, ident: object) -> str:
        return self._name(_TEMPLATES[kind].format(ident))

    @property
    def script_keys(self) -> list[str]:
        """KEYS[1..n] of every transition script, in the order of `FIXED`."""
        return [getattr(self, attr) for attr, _ in FIXED]

    def task(self, task_id: str) -> str:
        return self._per_id("task", task_id)

    def dependents(self, task_id: str) -> str:
        return self._per_id("dependents", task_id)

    def history(self, task_id: str) -> str:
        return self._per_id("history", task_id)

    def task_logs(self, task_id: str) -> str:
        """Hash of a task's captured output, attempt number -> text (expires with the task)."""
        return self._per_id("task_logs", task_id)

    def ready(self, queue: str) -> str:
        return self._per_id("ready", queue)

    def worker(self, worker_id: str) -> str:
        return self._per_id("worker", worker_id)

    def worker_tasks(self, worker_id: str) -> str:
        return self._per_id("worker_tasks", worker_id)

    def state(self, state: str) -> str:
        return self._per_id("state", state)

    def idempotency(self, key: str) -> str:
        return self._per_id("idempotency", key)

    def depth(self, queue: str) -> str:
        return self._per_id("depth", queue)

    def queue_counts(self, queue: str) -> str:
        """Hash of the queue's running and scheduled task counts (kept by the scripts)."""
        return self._per_id("queue_counts", queue)

    def stats_bucket(self, bucket: int) -> str:
        return self._per_id("stats_bucket", bucket)

    def wake(self, queue: str) -> str:
        return self._per_id("wake", queue)

    # ------------------------------------------------ flow control (not used by the task scripts)

    def schedule(self, schedule_id: str) -> str:
        """Hash: one schedule's definition and where it stands."""
        return self._per_id("schedule", schedule_id)

    @property
    def schedules_due(self) -> str:
        """Zset: ids of the schedules that are not paused, score = next run (ms)."""
        return self._name("schedules")

    @property
    def schedules_all(self) -> str:
        """Zset: every schedule id, score = created (ms)."""
        return self._name("schedules:all")

    def bulk_job(self, job_id: str) -> str:
        """Hash: one bulk cancel/retry job, its filter and progress."""
        return self._per_id("bulk_job", job_id)

    @property
    def bulk_jobs(self) -> str:
        """Zset: recent bulk job ids, score = created (ms)."""
        return self._name("bulk:jobs")

    @property
    def bulk_active(self) -> str:
        """Zset: bulk jobs not finished yet (the leader runs them), score = created (ms)."""
        return self._name("bulk:active")

    def pattern(self) -> str:
        """Glob matching every key of this namespace (for clean-up in tests and tools)."""
        return f"{self.prefix}*"
