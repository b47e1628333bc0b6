"""Settings of the dashboard, read from `SHOAL_DASHBOARD_*` environment variables (a group of
`shoal.core.settings.Settings`, so every service knows these names).

Where the API is and which token to use come from the API settings (`SHOAL_API_URL`,
`SHOAL_API_DASHBOARD_TOKEN` or `SHOAL_API_TOKEN`, `SHOAL_API_READ_TOKEN`); these say who
may open the dashboard and how long the dashboard waits for the API.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

AuthMode = Literal["auto", "accounts", "proxy", "none"]


class DashboardSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHOAL_", extra="ignore", env_file=None)

    dashboard_auth: AuthMode = "auto"
    """Who may open the dashboard. `accounts`: a sign-in page checks the accounts of
    SHOAL_DASHBOARD_USERS_FILE. `proxy`: an authenticating proxy in front (oauth2-proxy) names the
    person in a header. `none`: anyone who reaches it, as an operator. `auto`: `accounts` when a
    users file is set, else open to this machine only (requests from loopback) and refused to
    everyone else."""
    dashboard_users_file: str | None = None
    """Accounts, one per line: `<name>:<viewer|operator>:<bcrypt hash>` (make a line with
    `python -m shoal.dashboard.accounts <name> <role>`); re-read when the file changes."""
    dashboard_session_secret: str | None = Field(None, min_length=32)
    """Signs the sign-in cookies (32+ characters); give every dashboard replica the same one. When
    unset, each process makes its own: sessions end when it restarts and do not carry between
    replicas."""
    dashboard_session_hours: float = Field(12.0, gt=0, le=24 * 30)
    """A sign-in lasts this long."""
    dashboard_proxy_user_header: str = "X-Forwarded-User"
    """With `proxy`: the header naming the signed-in person (oauth2-proxy sends X-Forwarded-User
    upstream; behind ingress-nginx's auth-url, X-Auth-Request-User)."""
    dashboard_proxy_groups_header: str = "X-Forwarded-Groups"
    """With `proxy`: the header listing the person's groups, comma-separated."""
    dashboard_operator_groups: str = ""
    """With `proxy`: comma-separated groups whose members are operators (may act); the others are
    viewers."""
    dashboard_viewer_groups: str = ""
    """With `proxy`: when set, only members of these groups (or of the operator groups) may open the
    dashboard at all."""
    dashboard_timeout_s: float = Field(5.0, gt=0, le=300)
    """How long the dashboard waits for an API answer."""

    @field_validator("dashboard_users_file", "dashboard_session_secret")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return None if value is not None and not value.strip() else value

    @staticmethod
    def _groups(value: str) -> frozenset[str]:
        return frozenset(g.strip() for g in value.split(",") if g.strip())

    @property
    def operator_groups(self) -> frozenset[str]:
        return self._groups(self.dashboard_operator_groups)

    @property
    def viewer_groups(self) -> frozenset[str]:
        return self._groups(self.dashboard_viewer_groups)

    @property
    def resolved_auth(self) -> AuthMode:
        """`auto` made concrete: `accounts` with a users file, else `auto` stays (local only)."""
        if self.dashboard_auth == "auto" and self.dashboard_users_file:
            return "accounts"
        return self.dashboard_auth


@lru_cache(maxsize=1)
def get_dashboard_settings() -> DashboardSettings:
    return DashboardSettings()
