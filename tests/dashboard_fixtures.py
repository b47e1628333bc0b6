"""Fixtures of the dashboard's AppTest files: the dashboard without sign-in, on the test's scheduler.

Import them with `from dashboard_fixtures import *` beside `api_fixtures` (whose `api` fixture
`shoal` uses).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from api_fixtures import ApiServer
from shoal import Client

__all__ = ["dashboard_without_sign_in", "shoal"]


@pytest.fixture
def dashboard_without_sign_in(monkeypatch: pytest.MonkeyPatch) -> None:
    # AppTest has no browser connection to sign in with: these tests open the dashboard without
    # sign-in (test_dashboard_auth.py and test_dashboard_browser.py sign in for real).
    monkeypatch.setenv("SHOAL_DASHBOARD_AUTH", "none")
    monkeypatch.delenv("SHOAL_API_TOKEN", raising=False)
    monkeypatch.delenv("SHOAL_DASHBOARD_TIMEOUT_S", raising=False)


@pytest.fixture
def shoal(
    api: ApiServer, monkeypatch: pytest.MonkeyPatch, dashboard_without_sign_in: None
) -> Iterator[Client]:
    """The dashboard pointed at this test's scheduler, and a client of that scheduler."""
    monkeypatch.setenv("SHOAL_API_URL", api.url)
    with api.client() as client:
        yield client
