"""The task record and the sorted-set members: formats the Lua scripts and Python share.

A task is one string in the namespace's `tasks` hash: the fields of `FIELDS`, in that
order, joined by `SEP` (a unit separator, which no field can hold: names and queues match
`NAME_PATTERN`, idempotency keys refuse control characters, and args/kwargs are JSON,
which escapes them). One string per task instead of a hash per task keeps a queued no-op
task near 100 bytes of payload and lets a script read or write a whole batch of tasks with
one HMGET / HSET. Result, error, traceback and history live in their own hashes, so the
hot paths never move them.

`shoal.core.scripts` generates the Lua side (`R_<FIELD>` indexes, the parse pattern, the
member constants) from this module; tests check that both sides agree.
"""

from __future__ import annotations

SEP = "\x1f"

FIELDS: tuple[str, ...] = (
    "state",
    "attempts",
    "attempt_limit",
    "worker_id",
    "started_at",  # ms since the epoch, as are the other *_at fields and scheduled_for
    "enqueued_at",
    "vseq",  # virtual enqueue time in microseconds: FIFO order within a priority
    "deps_left",
    "dependents",  # '1' once a task depends on this one: its end fans out
    "scheduled_for",
    "finished_at",
    "queue",
    "name",
    "priority",
    "rank_offset",  # priority x ageing in microseconds, fixed at submit
    "created",  # creation stamp: microseconds, CREATED_HEX_DIGITS lowercase hex digits
    "max_retries",
    "timeout_s",
    "delay_ms",
    "idempotency_key",
    "depends_on",  # comma-separated ids
    "flow_key",  # the task's flow key ('' for none): its concurrency/rate scope and fair-share group
    "results_to",  # keyword argument that gets the dependencies' results at claim time ('' for none)
    "args",  # JSON
    "kwargs",  # JSON
)
INDEX = {name: i for i, name in enumerate(FIELDS)}

# Members of the lexicographic sorted sets (all scores 0), NUL-separated:
#   ready:    queue NUL claim-order id    (claim order = vseq - rank_offset + READY_OFFSET, hex)
#   flow:ready  queue NUL group NUL claim-order id   (tasks with a flow key; parked tasks)
#   flow:groups queue NUL group                      (groups that have ready tasks)
#   flow:starts scope NUL start ms (hex) NUL id:attempt   (the rate limits' sliding windows)
#   state:<s> queue NUL name NUL created id
#   edges:    parent NUL child
#   wtasks:   worker NUL id
MEMBER_SEP = "\x00"
CREATED_HEX_DIGITS = 13  # microseconds up to 2**52: the year 2112
READY_HEX_DIGITS = 14
READY_OFFSET = 2**51  # keeps claim order positive whatever the priority offset
AUDIT_KEPT = 20  # audit entries kept on a task (the namespace's audit stream has them all)
AUDIT_LOGGED_IDS = 20  # task ids an entry of the audit stream lists (with the count of all)
KEPT_ATTEMPT_LOGS = 20  # the captured output of a task's last this many attempts is kept
# A listing cursor: the creation stamp of the last task of a page.
CURSOR_PATTERN = rf"^[0-9a-f]{{{CREATED_HEX_DIGITS}}}$"


def encode(fields: dict[str, object]) -> str:
    """A record from field values (missing ones empty); used by tools and tests."""
    return SEP.join("" if fields.get(name) is None else str(fields[name]) for name in FIELDS)


def decode(raw: str) -> dict[str, str]:
    values = raw.split(SEP, len(FIELDS) - 1)
    if len(values) != len(FIELDS):
        raise ValueError(f"a task record has {len(FIELDS)} fields, this one {len(values)}")
    return dict(zip(FIELDS, values, strict=True))


def created_stamp(created: str) -> float:
    """The creation stamp of a record as epoch seconds."""
    return int(created, 16) / 1_000_000


def index_member(queue: str, name: str, created: str, task_id: str) -> str:
    return f"{queue}{MEMBER_SEP}{name}{MEMBER_SEP}{created}{task_id}"


def ready_member(queue: str, vseq: int, rank_offset: int, task_id: str) -> str:
    order = vseq - rank_offset + READY_OFFSET
    return f"{queue}{MEMBER_SEP}{order:0{READY_HEX_DIGITS}x}{task_id}"


def ready_member_id(member: str) -> str:
    """The task id at the end of a ready-set member."""
    return member[member.index(MEMBER_SEP) + 1 + READY_HEX_DIGITS :]


def index_member_created(member: str) -> str:
    """The creation stamp (hex) of a state-index member."""
    start = member.rindex(MEMBER_SEP) + 1
    return member[start : start + CREATED_HEX_DIGITS]


def index_member_id(member: str) -> str:
    """The task id at the end of a state-index member."""
    return member[member.rindex(MEMBER_SEP) + 1 + CREATED_HEX_DIGITS :]


def log_field(task_id: str, attempt: int) -> str:
    """The field of one attempt's captured output in the `task_logs` hash."""
    return f"{task_id}{MEMBER_SEP}{attempt}"


def prefix_range(prefix: str) -> tuple[str, str]:
    """ZRANGEBYLEX bounds of every member starting with `prefix` (which ends with MEMBER_SEP)."""
    return "[" + prefix, "(" + prefix[:-1] + "\x01"
