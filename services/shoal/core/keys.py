"""Every Redis key name Shoal uses: the one schema that Python and the Lua scripts share.

All names of a namespace start with the hash tag `{namespace}`, so they live in one Redis
Cluster slot. Per-task, per-queue and per-state data live in a fixed set of per-namespace
structures (docs/contracts.md, "Redis data model"), so every transition script receives
every key it touches in KEYS: those of `FIXED` it may touch, in FIXED's order (a call costs
per key passed: `shoal.core.scripts.key_layout`), then the calling worker's hash when the
script needs it; in Lua they are at their FIXED places again. No script builds a key name
from data it read.
`shoal.core.scripts` generates the Lua prelude from this module (`K_<NAME>`), and
tests/test_key_schema.py checks that both agree.
"""

from __future__ import annotations

from shoal.core.states import TaskState

# The namespace's fixed keys, in the order of KEYS[1..n] inside every transition script (each
# is passed those it may touch): attribute of `Keys` (upper-cased with K_ in Lua) -> suffix.
FIXED: tuple[tuple[str, str], ...] = (
    ("tasks", "tasks"),  # hash id -> task record (shoal.core.record)
    ("results", "results"),  # hash id -> result JSON of a succeeded task
    ("errors", "errors"),  # hash id -> last error message
    ("tracebacks", "tracebacks"),  # hash id -> last traceback
    ("history", "history"),  # hash id -> JSON list of earlier attempts
    ("task_logs", "logs"),  # hash id NUL attempt -> what that attempt printed and logged
    ("idempotency", "idem"),  # hash idempotency key -> task id
    ("edges", "edges"),  # lex zset: parent NUL child
    # lex zset: parent NUL child, the edges a release or cascade went through (and those of a
    # dependent submitted after its dependency ended), kept while the parent is there: a task's
    # dependents are its range here plus its range of `edges`; a retry with dependents walks them
    ("past_edges", "edges:past"),
    ("ready", "ready"),  # lex zset: queue NUL claim order id
    # lex zsets, one per state: queue NUL name NUL created id
    *((f"state_{s.value}", f"state:{s.value}") for s in TaskState),
    # hash state NUL queue NUL name -> the newest creation stamp that entered that range of the
    # state's index (an upper bound of its newest task); exactly the non-empty ranges
    ("ranges", "ranges"),
    ("done", "done"),  # zset id -> finished ms: retention by time and by count
    ("scheduled", "scheduled"),  # zset id -> due ms
    ("leases", "leases"),  # zset id -> lease deadline ms
    ("worker_tasks", "wtasks"),  # lex zset: worker NUL id
    ("workers", "workers"),  # zset worker id -> last heartbeat ms
    ("live_queues", "qlive"),  # hash queue -> unfinished tasks (only queues that have some)
    ("depth", "depth"),  # hash queue NUL priority -> queued tasks
    ("vclock", "vclock"),  # string: the virtual clock (microseconds)
    ("stats_done", "stats:done"),  # hash bucket:state -> finished tasks per 10-second bucket
    ("stats_samples", "stats:samples"),  # list of recent "wait_ms,run_ms"
    ("events", "events"),  # stream of recent events (the live channel has the same name)
    ("fanout", "fanout"),  # list of release/cascade work left over by a bounded call
    ("paused_queues", "paused"),  # hash queue -> paused since (ms): the claim skips those queues
    ("progress", "progress"),  # hash id -> JSON of the latest progress its running attempt reported
    ("flow_rules", "flow:rules"),  # hash scope -> concurrency,rate,period_ms,weight (shoal.core.flow)
    ("flow_running", "flow:running"),  # hash scope -> running tasks (every queue:, name:, key: scope)
    ("flow_ready", "flow:ready"),  # lex zset: queue NUL group NUL claim order id
    ("flow_groups", "flow:groups"),  # lex zset: queue NUL group, the groups with ready tasks
    ("flow_cursor", "flow:cursor"),  # hash queue -> the group the round robin served last
    ("flow_starts", "flow:starts"),  # lex zset: scope NUL start ms NUL id:attempt (rate windows)
    ("audit", "audit"),  # hash id -> JSON list of who did what to the task (the last AUDIT_KEPT)
    ("audit_log", "audit:log"),  # capped stream of every recorded action of the namespace
)

# Keys named after one id: method of `Keys` -> suffix template ("{}" is the id). The
# transition scripts receive only the first, the calling worker's hash, after FIXED
# (SCRIPT_PER_ID); schedules and bulk jobs are used by plain scripts that get their keys
# one by one (see each script's header) and by Python.
PER_ID: tuple[tuple[str, str], ...] = (
    ("worker", "worker:{}"),
    ("schedule", "sched:{}"),
    ("bulk_job", "bulk:{}"),
)
SCRIPT_PER_ID = ("worker",)

# Keys only Python and the plain scripts use (each of those gets its keys one by one).
OTHER: tuple[tuple[str, str], ...] = (
    ("names", "names"),  # set of task names advertised by workers
    ("leader", "leader"),
    ("scaling_history", "scaling"),
    ("chart_samples", "charts"),  # list of the leader's chart samples (shoal.core.samples), newest first
    ("schedules_due", "schedules"),  # zset: ids of the schedules not paused, score = next run ms
    ("schedules_all", "schedules:all"),  # zset: every schedule id, score = created ms
    ("bulk_jobs", "bulk:jobs"),  # zset: recent bulk job ids, score = created ms
    ("bulk_active", "bulk:active"),  # zset: bulk jobs not finished yet, score = created ms
)

# Pub/sub channels are not keys, but their names follow the same schema.
CHANNELS: tuple[tuple[str, str], ...] = (
    ("events_channel", "events"),
    ("wake", "wake:{}"),
)

_TEMPLATES = dict(PER_ID + CHANNELS)


class Keys:
    """The names of one namespace's keys (`{namespace}:<suffix>`)."""

    tasks: str
    results: str
    errors: str
    tracebacks: str
    history: str
    task_logs: str
    idempotency: str
    edges: str
    past_edges: str
    ready: str
    ranges: str
    done: str
    scheduled: str
    leases: str
    worker_tasks: str
    workers: str
    live_queues: str
    depth: str
    vclock: str
    stats_done: str
    stats_samples: str
    events: str
    fanout: str
    paused_queues: str
    audit: str
    audit_log: str
    progress: str
    flow_rules: str
    flow_running: str
    flow_ready: str
    flow_groups: str
    flow_cursor: str
    flow_starts: str
    names: str
    leader: str
    scaling_history: str
    chart_samples: str
    schedules_due: str
    schedules_all: str
    bulk_jobs: str
    bulk_active: str
    events_channel: str

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.prefix = "{" + namespace + "}"
        for attr, suffix in FIXED + OTHER + CHANNELS:
            if "{}" not in suffix:
                setattr(self, attr, self._name(suffix))
        self.events_stream = self.events
        self.script_keys = [getattr(self, attr) for attr, _ in FIXED]
        """KEYS[1..n] of every transition script, in the order of `FIXED`."""

    def _name(self, suffix: str) -> str:
        return f"{self.prefix}:{suffix}"

    def _per_id(self, kind: str, ident: object) -> str:
        return self._name(_TEMPLATES[kind].format(ident))

    def state(self, state: str) -> str:
        """The listing index of one state."""
        return str(getattr(self, f"state_{state}"))

    def worker(self, worker_id: str) -> str:
        return self._per_id("worker", worker_id)

    def wake(self, queue: str) -> str:
        """Channel: "work available in this queue", for idle workers."""
        return self._per_id("wake", queue)

    def schedule(self, schedule_id: str) -> str:
        """Hash: one schedule's definition and where it stands."""
        return self._per_id("schedule", schedule_id)

    def bulk_job(self, job_id: str) -> str:
        """Hash: one bulk cancel/retry job, its filter and progress."""
        return self._per_id("bulk_job", job_id)

    def pattern(self) -> str:
        """Glob matching every key of this namespace (for clean-up in tests and tools)."""
        return f"{self.prefix}*"
