"""Configuration of every Shoal service, read from `SHOAL_*` environment variables.

Settings are grouped by concern; each group is its own `BaseSettings` so that the
flat variable names users know (`SHOAL_REDIS_URL`, `SHOAL_LEASE_S` ...) stay flat.
`Settings` holds every group (the Kubernetes and scaling groups live in their own modules
of this package); a service builds it once with `load_settings()`, which also refuses
`SHOAL_*` variables that no group defines (`shoal.core.env_check`), and passes it down.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from functools import lru_cache
from typing import ClassVar, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

from shoal.core.dashboard_settings import DashboardSettings
from shoal.core.env_check import known_variables, unknown_variables
from shoal.core.http_settings import HttpSettings
from shoal.core.kube_settings import KubeSettings
from shoal.core.names import NAME_PATTERN
from shoal.core.redis_url import RedisTarget, parse_redis_url
from shoal.core.scaling_settings import ScalingSettings

_ENV = SettingsConfigDict(env_prefix="SHOAL_", extra="ignore", env_file=None)


class RedisSettings(BaseSettings):
    model_config = _ENV

    redis_url: str = "redis://127.0.0.1:6379/0"
    """Where the tasks are: `redis://` (one server), `redis+cluster://h:p[,h:p...]` (Redis Cluster
    seed nodes) or `redis+sentinel://h:p[,h:p...]/service` (sentinels); `rediss...` for TLS.
    See `shoal.core.redis_url`."""
    namespace: str = "shoal"
    """Key prefix; several deployments (or test runs) can share one Redis."""
    redis_username: str | None = None
    """Redis ACL user, when not given in the URL."""
    redis_password: SecretStr | None = None
    """Redis password, when not given in the URL (no percent-encoding needed here)."""
    redis_sentinel_username: str | None = None
    """ACL user of the sentinels themselves (their own `requirepass`/ACL), if they need one."""
    redis_sentinel_password: SecretStr | None = None
    """Password of the sentinels themselves, if they need one."""
    redis_tls_ca_file: str | None = None
    """PEM file of the CA that signed the Redis servers' certificates (TLS URLs); default: the system's."""
    redis_tls_cert_file: str | None = None
    """Client certificate (PEM) for servers that require mutual TLS."""
    redis_tls_key_file: str | None = None
    """Private key (PEM) of `redis_tls_cert_file`."""
    redis_tls_verify: bool = True
    """Verify the servers' certificates and host names. Turning it off allows a man in the middle."""
    redis_max_connections: int = Field(64, ge=2, le=10_000)
    """Connections of the process's main Redis pool. When all are busy a command waits for one
    (up to `redis_pool_timeout_s`) instead of failing."""
    redis_pool_timeout_s: float = Field(5.0, gt=0, le=300)
    """How long a command waits for a free pooled connection before it fails (503 on the API)."""
    redis_socket_timeout_s: float = Field(5.0, gt=0, le=300)
    """How long a command waits for Redis's reply."""
    redis_connect_timeout_s: float = Field(2.0, gt=0, le=60)
    """How long opening a connection may take."""

    redis_wait_replicas: int = Field(0, ge=0, le=16)
    """Acknowledge a submission, cancel or retry only once this many replicas have it (Redis
    `WAIT`); results and hand-backs wait too (a shortfall is logged). 0: acknowledged once the
    primary has it (replication is asynchronous: a failover may lose the last writes). See
    docs/reliability.md."""
    redis_wait_timeout_ms: int = Field(1000, ge=1, le=60_000)
    """How long `WAIT` waits for `redis_wait_replicas` replicas before the write is reported as
    not acknowledged (503)."""

    @field_validator("namespace")
    @classmethod
    def _namespace_is_a_name(cls, value: str) -> str:
        if not NAME_PATTERN.match(value) or "{" in value or "}" in value:
            raise ValueError("namespace must be 1-128 of [A-Za-z0-9_.:-]")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url_parses(cls, value: str) -> str:
        parse_redis_url(value)
        return value

    @model_validator(mode="after")
    def _credentials_given_once(self) -> RedisSettings:
        target = parse_redis_url(self.redis_url)
        # Both may be given when they agree (a chart may splice the password into the URL).
        password = self.redis_password.get_secret_value() if self.redis_password is not None else None
        if None not in (target.password, password) and target.password != password:
            raise ValueError("SHOAL_REDIS_URL and SHOAL_REDIS_PASSWORD give different Redis passwords")
        if None not in (target.username, self.redis_username) and target.username != self.redis_username:
            raise ValueError("SHOAL_REDIS_URL and SHOAL_REDIS_USERNAME give different Redis users")
        if (self.redis_tls_cert_file is None) != (self.redis_tls_key_file is None):
            raise ValueError("SHOAL_REDIS_TLS_CERT_FILE and SHOAL_REDIS_TLS_KEY_FILE go together")
        return self

    @property
    def redis_target(self) -> RedisTarget:
        """The parsed URL with the credentials from the settings filled in."""
        target = parse_redis_url(self.redis_url)
        password = self.redis_password.get_secret_value() if self.redis_password else None
        return target.with_credentials(target.username or self.redis_username, target.password or password)


class TaskSettings(BaseSettings):
    model_config = _ENV

    lease_s: float = Field(10.0, gt=0.2, le=3600)
    """Length of the lease a worker gets on a claimed task; renewed by heartbeats."""
    heartbeat_s: float = Field(2.0, gt=0.05, le=600)
    """How often a worker renews its leases and announces itself."""
    worker_ttl_s: float = Field(10.0, gt=0.2, le=3600)
    """A worker that has not sent a heartbeat for this long is considered lost."""
    retention_s: int = Field(86400, ge=1)
    """How long terminal tasks (and idempotency keys) are kept."""
    retention_max_tasks: int = Field(1_000_000, ge=0)
    """At most this many terminal tasks are kept (the oldest finished go first); 0: no cap.
    Trimmed by the leader in bounded steps, like the age limit."""
    max_queues: int = Field(1000, ge=1, le=100_000)
    """Queues that may hold unfinished tasks at once; a submit to a new queue past it is
    refused (422). Bounds what /queues, the metrics and the autoscaler read."""
    default_max_retries: int = Field(3, ge=0, le=100)
    """Retries of a task that does not say otherwise."""
    default_timeout_s: float = Field(300.0, gt=0)
    """Run-time limit of a task that does not say otherwise."""
    backoff_base_s: float = Field(1.0, ge=0)
    """First retry waits up to this long (exponential, full jitter)."""
    backoff_max_s: float = Field(300.0, ge=0)
    """Upper bound of the retry backoff."""
    priority_aging_s: float = Field(60.0, gt=0, le=1_000_000)
    """One priority level is worth this many seconds of waiting: prevents starvation."""
    leader_lock_s: float = Field(5.0, ge=0.5, le=600)
    """Lifetime of the Redis leader lock (outside Kubernetes): when the leader dies, another
    scheduler replica takes over the reaper and the other singleton loops within this."""

    @model_validator(mode="after")
    def _timings_fit_together(self) -> TaskSettings:
        if self.heartbeat_s * 2 > self.lease_s:
            raise ValueError(
                f"SHOAL_HEARTBEAT_S ({self.heartbeat_s:g}) must be at most half of SHOAL_LEASE_S "
                f"({self.lease_s:g}), or leases expire under load"
            )
        if self.worker_ttl_s < self.heartbeat_s * 2:
            raise ValueError(
                f"SHOAL_WORKER_TTL_S ({self.worker_ttl_s:g}) must be at least twice SHOAL_HEARTBEAT_S "
                f"({self.heartbeat_s:g}), or a worker that is one heartbeat late is declared lost"
            )
        if self.backoff_base_s > self.backoff_max_s:
            raise ValueError(
                f"SHOAL_BACKOFF_BASE_S ({self.backoff_base_s:g}) must not exceed SHOAL_BACKOFF_MAX_S "
                f"({self.backoff_max_s:g})"
            )
        return self


class ApiSettings(BaseSettings):
    model_config = _ENV

    api_token: str | None = None
    """A read-write token (named `admin` in the audit). When any token is set, every /api/v1 route
    requires `Authorization: Bearer <token>`."""
    api_read_token: str | None = None
    """A read-only token (named `reader`): every GET route; any other method answers 403."""
    api_dashboard_token: str | None = None
    """The dashboard's read-write token (named `dashboard`): the one token that may name the signed-in
    person an action is for (`X-Shoal-Actor`), as the audit then records."""
    api_tokens_file: str | None = None
    """A file of more named tokens, one per line: `<name> <read|write> <token>` (`#` starts a comment).
    Each name is what the audit shows for that token's actions."""
    api_url: str = "http://127.0.0.1:8000"
    """Where the CLI and the dashboard reach the scheduler API."""
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    """Largest request body accepted (413 past it)."""
    # The submit script holds Redis for ~10-25 us per task and ~3-9 us per dependency edge,
    # depending on the machine's load (docs/reliability.md, "Bounded work per request"): the
    # defaults keep one request's script call under 50 ms, which every other client can live with.
    max_batch: int = Field(1000, ge=1, le=10_000)
    """Most tasks in one batch submission (422 past it)."""
    max_dependency_edges: int = Field(2000, ge=0, le=50_000)
    """Most `depends_on` entries summed over all tasks of one request (422 past it)."""
    # The retry script holds Redis for about what a cascade does per task and edge.
    max_retry_dependents: int = Field(2000, ge=1, le=50_000)
    """Most upstream_failed tasks one retry with dependents returns to pending (and 4x as many
    dependency edges walked); a bigger DAG is refused with 409 and nothing changed."""
    max_payload_bytes: int = Field(256 * 1024, ge=64)
    """Largest JSON-encoded args+kwargs of one task (422 past it); besides, they may nest at most 64
    deep and hold integers within -2**63..2**64-1 only."""
    validate_task_names: bool = True
    """Refuse task names no worker has advertised (once any worker has registered)."""
    metrics_token: str | None = None
    """When set, /metrics of the scheduler and of every worker requires `Authorization: Bearer <token>`."""

    @field_validator("api_token", "api_read_token", "api_dashboard_token", "api_tokens_file", "metrics_token")
    @classmethod
    def _token_not_blank(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and value.strip() == "":
            return None
        if value is not None and info.field_name != "api_tokens_file" and len(value) < 8:
            raise ValueError(f"SHOAL_{str(info.field_name).upper()} must be at least 8 characters")
        return value


def _default_worker_id() -> str:
    """the pod name (SHOAL_POD_NAME), else `<host>-<pid>-<6 random hex>`"""
    pod = os.environ.get("SHOAL_POD_NAME")
    if pod:
        return pod
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _cpu_count() -> int:
    """the number of CPUs"""
    return max(1, os.cpu_count() or 1)


class WorkerSettings(BaseSettings):
    model_config = _ENV

    concurrency: int = Field(32, ge=1, le=10_000)
    """Task slots per worker process."""
    queues: str = "default"
    """Comma-separated queues this worker serves, each with an optional weight: with
    `critical=5,default=2,bulk` (weight 1 when omitted) and every queue backlogged, claims
    go to the queues 5:2:1."""
    task_modules: str = ""
    """Comma-separated Python modules whose @task functions this worker runs."""
    worker_port: int = Field(9100, ge=0, le=65535)
    """Port of /healthz, /readyz and /metrics; 0 picks any free port."""
    worker_id: str = Field(default_factory=_default_worker_id)
    """Unique worker id; the pod name in a cluster."""
    grace_s: float = Field(20.0, ge=0)
    """After SIGTERM, how long running tasks may finish before they are handed back."""
    process_pool_size: int = Field(default_factory=_cpu_count, ge=1)
    """Processes for CPU-bound tasks."""
    max_log_chars: int = Field(64 * 1024, ge=1024, le=4 * 1024 * 1024)
    """Most characters of a task's own output (prints and log records) kept per attempt; past it
    the start is kept and the cut marked."""
    max_result_bytes: int = Field(1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    """Largest task result kept, as JSON; a bigger one fails the attempt for good, saying so."""
    max_error_chars: int = Field(8 * 1024, ge=256, le=1024 * 1024)
    """Error messages longer than this are cut, the cut marked in the text."""
    max_traceback_chars: int = Field(32 * 1024, ge=1024, le=4 * 1024 * 1024)
    """Tracebacks longer than this keep their end (the failing frames), the cut marked."""
    progress_interval_s: float = Field(0.5, ge=0, le=60)
    """Least time between two progress writes of one attempt (`shoal.progress`): reports in
    between are merged into the latest, so tasks that report in a tight loop neither load Redis
    nor push the other events out of the capped event stream. 0: write as fast as Redis answers."""

    @property
    def queue_weights(self) -> dict[str, int]:
        """Each served queue and its weight, in configured order."""
        return parse_queue_weights(self.queues)

    @property
    def queue_list(self) -> list[str]:
        return list(self.queue_weights)

    @property
    def module_list(self) -> list[str]:
        return [m.strip() for m in self.task_modules.split(",") if m.strip()]

    @field_validator("queues")
    @classmethod
    def _queues_are_names(cls, value: str) -> str:
        parse_queue_weights(value)
        return value


MAX_QUEUE_WEIGHT = 1000


def parse_queue_weights(value: str) -> dict[str, int]:
    """`critical=5,default=2,bulk` -> {"critical": 5, "default": 2, "bulk": 1}; ValueError
    naming the bad item otherwise."""
    weights: dict[str, int] = {}
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        name, has_weight, raw = (x.strip() for x in item.partition("="))
        if not NAME_PATTERN.match(name):
            raise ValueError(f"queues: {item!r} is not a queue name (letters, digits, _ . : -)")
        if name in weights:
            raise ValueError(f"queues: {name!r} is listed twice")
        weight = int(raw) if has_weight and raw.isdigit() else 0 if has_weight else 1
        if not 1 <= weight <= MAX_QUEUE_WEIGHT:
            raise ValueError(f"queues: the weight of {name!r} must be a whole number, 1-{MAX_QUEUE_WEIGHT}")
        weights[name] = weight
    if not weights:
        raise ValueError("queues must name at least one queue")
    return weights


class LogSettings(BaseSettings):
    model_config = _ENV

    log_format: str = Field("auto", pattern="^(auto|json|text)$")
    """json in containers, readable text on a terminal (auto picks by isatty)."""
    log_level: str = Field("INFO", pattern="^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")
    """Least severe log records written."""


class StartupSettings(BaseSettings):
    model_config = _ENV

    unknown_settings: Literal["refuse", "warn"] = "refuse"
    """What a service does at start with a `SHOAL_*` variable that is no setting (a typo in a
    name): `refuse` to start, naming the closest valid name, or `warn` and start
    (for a rollback that leaves a newer version's variable behind)."""


class Settings:
    """All groups together; a service builds it once (`load_settings()`) and passes it down."""

    GROUPS: ClassVar[dict[str, type[BaseSettings]]] = {
        "redis": RedisSettings,
        "tasks": TaskSettings,
        "api": ApiSettings,
        "http": HttpSettings,
        "worker": WorkerSettings,
        "log": LogSettings,
        "scaling": ScalingSettings,
        "kube": KubeSettings,
        "dashboard": DashboardSettings,
        "startup": StartupSettings,
    }

    def __init__(self) -> None:
        self.redis = RedisSettings()
        self.tasks = TaskSettings()
        self.api = ApiSettings()
        self.http = HttpSettings()
        self.worker = WorkerSettings()
        self.log = LogSettings()
        self.scaling = ScalingSettings()
        self.kube = KubeSettings()
        self.dashboard = DashboardSettings()
        self.startup = StartupSettings()
        self.warnings: list[str] = []
        """Problems found at load time that did not stop the start (`SHOAL_UNKNOWN_SETTINGS=warn`);
        the service logs them once logging is configured."""


class SettingsError(ValueError):
    """The configuration cannot work; `problems` are one-line messages naming the variables."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Every group from the environment, checked: invalid values and unknown `SHOAL_*` names
    raise `SettingsError` (unknown names only warn with `SHOAL_UNKNOWN_SETTINGS=warn`)."""
    try:
        settings = Settings()
    except ValidationError as exc:
        raise SettingsError([_describe(error) for error in exc.errors()]) from None
    unknown = unknown_variables(os.environ if environ is None else environ, known_variables(Settings.GROUPS))
    if unknown and settings.startup.unknown_settings == "refuse":
        raise SettingsError([*unknown, "set SHOAL_UNKNOWN_SETTINGS=warn to start anyway"])
    settings.warnings = unknown
    return settings


def _describe(error: ErrorDetails) -> str:
    field = "_".join(str(part) for part in error.get("loc", ()))
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"SHOAL_{field.upper()}: {message}" if field else message


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, loaded once (a FastAPI dependency tests can override)."""
    return load_settings()
