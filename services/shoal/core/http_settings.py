"""Settings of the scheduler's HTTP server, read from `SHOAL_HTTP_*` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class HttpSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHOAL_", extra="ignore", env_file=None)

    http_host: str = "127.0.0.1"
    """Address `python -m shoal.scheduler` listens on (the chart sets 0.0.0.0)."""
    http_port: int = Field(8000, ge=0, le=65535)
    """Port it listens on; 0 picks a free one."""
    http_header_timeout_s: float = Field(10.0, gt=0, le=600)
    """A request whose headers are not complete this long after the connection opened (or
    after the previous response) gets a 408 and is closed: slow or half-sent headers."""
    http_body_timeout_s: float = Field(30.0, gt=0, le=3600)
    """A request body not complete this long after its headers: the connection is closed."""
    http_max_header_bytes: int = Field(64 * 1024, ge=1024, le=1024 * 1024)
    """Most bytes of request line and headers (431 past it)."""
    http_keep_alive_s: int = Field(5, ge=1, le=600)
    """An idle keep-alive connection is closed after this many seconds."""
    http_limit_concurrency: int = Field(2048, ge=1, le=1_000_000)
    """Most open connections (event streams included) and requests in progress; past it new
    requests are answered 503 at once instead of queueing without bound."""
