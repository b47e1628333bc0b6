"""Who is looking at the dashboard, and whether they may act: accounts, sessions, proxy identities.

Two roles: a **viewer** reads everything; an **operator** may also submit, cancel, retry and
drain. Identities come from one of:

- built-in accounts (`SHOAL_DASHBOARD_USERS_FILE`, bcrypt hashes, the chart keeps them in a
  Secret): the sign-in page checks the password and sets a signed, HttpOnly session cookie;
- an authenticating proxy (oauth2-proxy / OIDC in front of the ingress) that names the person
  and their groups in request headers;
- nobody, for a dashboard open on purpose (`none`) or reached from this machine (`auto`).

One `Authority` per process decides: `shoal.dashboard.server` installs it and asks it at every
HTTP request and WebSocket (the gate), and the pages ask it again at every run
(`shoal.dashboard.session`), so a session that was signed out, expired, or whose account was
removed or its password changed, ends in an open tab too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import bcrypt

from shoal.core.dashboard_settings import DashboardSettings

log = logging.getLogger(__name__)

Role = Literal["viewer", "operator"]
ROLES: tuple[Role, ...] = ("viewer", "operator")
SESSION_COOKIE = "shoal_session"
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
FAILURES_ALLOWED = 5
FAILURE_WINDOW_S = 300.0
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.@\-]{1,64}$")
_HASH = re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")
# A person's name from a proxy (a login or an e-mail): printable and bounded.
_PROXY_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")


@dataclass(frozen=True, slots=True)
class User:
    """Someone looking at the dashboard; `via` says how they were identified."""

    name: str
    role: Role
    via: Literal["account", "proxy", "open", "local"]

    @property
    def may_act(self) -> bool:
        return self.role == "operator"


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    role: Role
    password_hash: bytes

    @property
    def fingerprint(self) -> str:
        """Changes with the password: a session made before the change is no longer valid."""
        return hashlib.sha256(self.password_hash).hexdigest()[:16]


class AccountsError(ValueError):
    """The users file cannot be used; the message names the file and line."""


def parse_accounts(text: str, source: str = "SHOAL_DASHBOARD_USERS_FILE") -> dict[str, Account]:
    """Lines `<name>:<viewer|operator>:<bcrypt hash>`; blank lines and `#` comments are skipped."""
    accounts: dict[str, Account] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}, line {number}"
        name, _, rest = line.partition(":")
        role, _, hashed = rest.partition(":")
        if not NAME_PATTERN.match(name):
            raise AccountsError(f"{where}: {name!r} is not a user name (1-64 of A-Z a-z 0-9 _ . @ -)")
        if role not in ROLES:
            raise AccountsError(f"{where}: the role must be viewer or operator, not {role!r}")
        if not _HASH.match(hashed):
            raise AccountsError(
                f"{where}: not a bcrypt hash (make the line with `python -m shoal.dashboard.accounts`)"
            )
        if name in accounts:
            raise AccountsError(f"{where}: {name!r} is listed twice")
        accounts[name] = Account(name, "operator" if role == "operator" else "viewer", hashed.encode())
    return accounts


def hash_password(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()


def account_line(name: str, role: str, password: str) -> str:
    """A users-file line for `name`; ValueError for a bad name, role or password."""
    if not NAME_PATTERN.match(name):
        raise ValueError("the user name must be 1-64 of A-Z a-z 0-9 _ . @ -")
    if role not in ROLES:
        raise ValueError("the role must be viewer or operator")
    if len(password) < 8:
        raise ValueError("the password must be at least 8 characters")
    return f"{name}:{role}:{hash_password(password)}"


class Accounts:
    """The users file, read again whenever it changes (a rotated Kubernetes Secret, say)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._accounts: dict[str, Account] = {}
        self.load()  # a file that cannot be read stops start-up

    def load(self) -> dict[str, Account]:
        try:
            info = self.path.stat()
            stamp = (info.st_mtime_ns, info.st_size)
            if stamp == self._stamp:
                return self._accounts
            accounts = parse_accounts(self.path.read_text(), f"SHOAL_DASHBOARD_USERS_FILE {self.path}")
        except OSError as exc:
            raise AccountsError(
                f"SHOAL_DASHBOARD_USERS_FILE {self.path}: cannot read it ({exc.strerror})"
            ) from None
        with self._lock:
            self._accounts, self._stamp = accounts, stamp
        log.info("dashboard accounts loaded", extra={"accounts": len(accounts), "file": str(self.path)})
        return accounts

    def current(self) -> dict[str, Account]:
        """The accounts as the file says now; the last good ones if it became unreadable or invalid."""
        try:
            return self.load()
        except AccountsError as exc:
            log.error("dashboard accounts not reloaded; keeping the last good ones: %s", exc)
            return self._accounts

    def check(self, name: str, password: str) -> Account | None:
        account = self.current().get(name)
        # A wrong name costs what a wrong password costs: the time does not tell which it was.
        target = account.password_hash if account is not None else _DUMMY_HASH
        ok = bcrypt.checkpw(password.encode(), target)
        return account if ok and account is not None else None


_DUMMY_HASH = bcrypt.hashpw(b"not a password anyone has", bcrypt.gensalt())


class Sessions:
    """Signed session cookies: `<payload>.<HMAC-SHA256>`, the payload naming the account, its role,
    the password's fingerprint and when the session ends."""

    def __init__(self, secret: str | None, hours: float) -> None:
        if secret is None:
            log.warning(
                "SHOAL_DASHBOARD_SESSION_SECRET is not set: sign-ins last until this process restarts "
                "and do not carry to other dashboard replicas"
            )
        self._key = (secret or secrets.token_urlsafe(48)).encode()
        self.lifetime_s = hours * 3600

    def issue(self, account: Account, now: float | None = None) -> str:
        payload = {
            "u": account.name,
            "r": account.role,
            "f": account.fingerprint,
            "e": int((now or time.time()) + self.lifetime_s),
        }
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{body}.{self._sign(body)}"

    def verify(self, cookie: str, accounts: Mapping[str, Account], now: float | None = None) -> User | None:
        """The user of a valid, unexpired cookie whose account still exists with that password."""
        body, _, signature = cookie.partition(".")
        if not body or not hmac.compare_digest(signature, self._sign(body)):
            return None
        try:
            payload = json.loads(_unb64(body))
        except ValueError:
            return None
        account = accounts.get(str(payload.get("u")))
        if account is None or payload.get("f") != account.fingerprint:
            return None  # removed, or its password changed since
        if float(payload.get("e", 0)) < (now or time.time()):
            return None
        return User(account.name, account.role, "account")

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def proxy_user(headers: Mapping[str, str], settings: DashboardSettings) -> User | None:
    """The person an authenticating proxy names, with the role their groups give; None when the
    proxy named nobody or the person is in none of the allowed groups."""
    name = headers.get(settings.dashboard_proxy_user_header.lower(), "").strip()
    if not name or not _PROXY_NAME.match(name):
        return None
    groups = {g.strip() for g in headers.get(settings.dashboard_proxy_groups_header.lower(), "").split(",")}
    if groups & settings.operator_groups:
        return User(name, "operator", "proxy")
    if settings.viewer_groups and not groups & settings.viewer_groups:
        return None
    return User(name, "viewer", "proxy")


class Authority:
    """The process' one answer to "who is this?", for the gate and for the pages alike."""

    def __init__(self, settings: DashboardSettings) -> None:
        self.settings = settings
        self.mode = settings.resolved_auth
        self.accounts: Accounts | None = None
        if self.mode == "accounts":
            if not settings.dashboard_users_file:
                raise AccountsError("SHOAL_DASHBOARD_AUTH=accounts needs SHOAL_DASHBOARD_USERS_FILE")
            self.accounts = Accounts(Path(settings.dashboard_users_file))
        self.sessions = Sessions(settings.dashboard_session_secret, settings.dashboard_session_hours)
        self._signed_out: dict[str, float] = {}  # cookie -> when it would have expired
        self._failures: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def identify(
        self, headers: Mapping[str, str], cookies: Mapping[str, str], client: str | None
    ) -> User | None:
        """`headers` with lower-case names. `client` is the peer address, or None when the gate
        already admitted this connection (the pages ask with None)."""
        if self.mode == "none":
            return User("anonymous", "operator", "open")
        if self.mode == "proxy":
            return proxy_user(headers, self.settings)
        if self.mode == "accounts":
            assert self.accounts is not None
            cookie = cookies.get(SESSION_COOKIE)
            if not cookie or cookie in self._signed_out:
                return None
            return self.sessions.verify(cookie, self.accounts.current())
        # auto without accounts: this machine only, never what a local proxy forwards for others.
        if client is None or (client in LOOPBACK and not {"x-forwarded-for", "forwarded"} & set(headers)):
            return User("local", "operator", "local")
        return None

    def sign_out(self, cookie: str) -> None:
        now = time.time()
        with self._lock:
            self._signed_out = {c: e for c, e in self._signed_out.items() if e > now}
            self._signed_out[cookie] = now + self.sessions.lifetime_s

    def throttled(self, client: str, name: str, now: float) -> bool:
        recent = [t for t in self._failures.get((client, name), []) if now - t < FAILURE_WINDOW_S]
        return len(recent) >= FAILURES_ALLOWED

    def failed(self, client: str, name: str, now: float) -> None:
        with self._lock:
            key = (client, name)
            recent = [t for t in self._failures.pop(key, []) if now - t < FAILURE_WINDOW_S]
            self._failures[key] = [*recent, now]
            while len(self._failures) > 10_000:  # bounded whatever names a client tries
                self._failures.popitem(last=False)


_installed: Authority | None = None


def install(authority: Authority) -> None:
    """Make `authority` the one the pages of this process ask (done by `shoal.dashboard.server`)."""
    global _installed
    _installed = authority


def installed() -> Authority | None:
    """The gate's authority, or None when the pages run without the gate (plain `streamlit run`)."""
    return _installed
