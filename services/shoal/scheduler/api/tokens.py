"""Who is calling the API: bearer tokens with a name and a scope, and the actor an action is for.

Tokens come from the settings: `SHOAL_API_TOKEN` (read-write, named `admin`),
`SHOAL_API_READ_TOKEN` (read-only, `reader`), `SHOAL_API_DASHBOARD_TOKEN` (read-write,
`dashboard`, and the one token that may say which signed-in person an action is for, in the
`X-Shoal-Actor` header), and any number of named ones in `SHOAL_API_TOKENS_FILE`. A read
token may call every GET route; every other method answers 403. The audit of each action
records the actor: the token's name, or `<person>` via the dashboard.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from shoal.core.settings import ApiSettings

Scope = Literal["read", "write"]
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ACTOR_HEADER = "X-Shoal-Actor"
MIN_TOKEN_CHARS = 8
_NAME = re.compile(r"^[A-Za-z0-9_.@:\-]{1,64}$")
# A person's name as an identity provider gives it (a login, an e-mail): printable, bounded.
ACTOR_PATTERN = r"^[^\x00-\x1f\x7f]{1,128}$"
_ACTOR = re.compile(ACTOR_PATTERN)


@dataclass(frozen=True, slots=True)
class Principal:
    """A token's holder: its name (what the audit shows), its scope, whether it may act for people."""

    name: str
    scope: Scope
    acts_for_people: bool = False

    def may(self, method: str) -> bool:
        return self.scope == "write" or method.upper() in READ_METHODS


ANONYMOUS = Principal("anonymous", "write", acts_for_people=True)
"""The caller of an API that has no token configured (a laptop's `make up`)."""


@dataclass(frozen=True, slots=True)
class Actor:
    """Who an action is recorded for: `name`, and `via` the token that carried it when that differs."""

    name: str
    via: str | None = None

    def describe(self) -> str:
        return f"{self.name} (via {self.via})" if self.via else self.name


class TokenFileError(ValueError):
    """SHOAL_API_TOKENS_FILE cannot be used; the message names the file and line."""


class TokenTable:
    """Every configured token and its principal; `authenticate` compares in constant time."""

    def __init__(self, entries: list[tuple[str, Principal]]) -> None:
        names = [p.name for _, p in entries]
        if len(set(names)) != len(names):
            raise TokenFileError(
                f"token names must be unique: {sorted({n for n in names if names.count(n) > 1})}"
            )
        secrets = [t for t, _ in entries]
        if len(set(secrets)) != len(secrets):
            raise TokenFileError("two configured tokens are the same secret: give each client its own")
        self._entries = [(token.encode(), principal) for token, principal in entries]

    @property
    def required(self) -> bool:
        """False when no token is configured at all: then every caller is `anonymous`."""
        return bool(self._entries)

    @property
    def names(self) -> list[str]:
        return [p.name for _, p in self._entries]

    def authenticate(self, given: str) -> Principal | None:
        found: Principal | None = None
        candidate = given.encode()
        for token, principal in self._entries:  # no early exit: the time never tells which matched
            if hmac.compare_digest(candidate, token):
                found = principal
        return found

    @classmethod
    def from_settings(cls, api: ApiSettings) -> TokenTable:
        entries: list[tuple[str, Principal]] = []
        for token, principal in (
            (api.api_token, Principal("admin", "write")),
            (api.api_read_token, Principal("reader", "read")),
            (api.api_dashboard_token, Principal("dashboard", "write", acts_for_people=True)),
        ):
            if token:
                entries.append((token, principal))
        if api.api_tokens_file:
            entries += read_tokens_file(Path(api.api_tokens_file))
        return cls(entries)


def read_tokens_file(path: Path) -> list[tuple[str, Principal]]:
    """Lines `<name> <read|write> <token>`; blank lines and `#` comments are skipped."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise TokenFileError(
            f"SHOAL_API_TOKENS_FILE {path}: cannot read it ({exc.strerror or exc})"
        ) from None
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        where = f"SHOAL_API_TOKENS_FILE {path}, line {number}"
        if len(parts) != 3:
            raise TokenFileError(f"{where}: expected `<name> <read|write> <token>`")
        name, scope, token = parts
        if not _NAME.match(name) or name in ("admin", "reader", "dashboard", "anonymous"):
            raise TokenFileError(f"{where}: {name!r} is not a usable name (1-64 of A-Z a-z 0-9 _ . @ : -, "
                                 "and not admin, reader, dashboard or anonymous)")  # fmt: skip
        if scope not in ("read", "write"):
            raise TokenFileError(f"{where}: the scope must be read or write, not {scope!r}")
        if len(token) < MIN_TOKEN_CHARS:
            raise TokenFileError(f"{where}: the token must be at least {MIN_TOKEN_CHARS} characters")
        entries.append((token, Principal(name, "read" if scope == "read" else "write")))
    return entries


def actor_for(principal: Principal, claimed: str | None) -> Actor:
    """The actor of a request: the principal itself, or the person its `X-Shoal-Actor` names.

    ValueError when the header is malformed; PermissionError when this token may not name people.
    """
    if claimed is None:
        return Actor(principal.name)
    if not _ACTOR.match(claimed):
        raise ValueError(f"{ACTOR_HEADER} must be 1-128 printable characters")
    if not principal.acts_for_people:
        raise PermissionError(f"the token {principal.name!r} may not act for others ({ACTOR_HEADER})")
    return Actor(claimed, via=principal.name)
