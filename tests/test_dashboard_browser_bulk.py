"""A bulk cancel from the dashboard in a real browser: headless Chromium picks a queue in the
Tasks page's filter, asks to cancel every task of it, sees the count in the confirmation
(nothing cancelled yet), confirms, and sees the job finish; the other queue is untouched.

The dashboard runs as the chart runs it (`python -m shoal.dashboard.server`, a local browser
is an operator), the scheduler is the real app on this test's Redis namespace.
"""

from __future__ import annotations

import pytest

from api_fixtures import *  # noqa: F403 - the api / api_factory fixtures
from api_fixtures import ApiServer
from test_dashboard_browser import CHROMIUM, browser_page, dashboard  # noqa: F401 - fixtures

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium (apt-get install chromium)"
    ),
    pytest.mark.leader,  # bulk jobs run in the leader's loops
]


def test_bulk_cancel_of_a_queue_after_the_confirmation(api: ApiServer, dashboard: str, browser_page) -> None:  # noqa: F811
    from playwright.sync_api import expect

    with api.client() as client:
        client.submit_batch([{"name": "echo", "queue": "bulkq"} for _ in range(12)])
        client.submit_batch([{"name": "echo", "queue": "keepq"} for _ in range(3)])
        page = browser_page
        page.goto(f"{dashboard}/tasks")
        expect(page.get_by_role("heading", name="Tasks")).to_be_visible()

        page.get_by_test_id("stSelectbox").filter(has_text="Queue").click()
        page.get_by_role("option", name="bulkq", exact=True).click()
        expect(page.get_by_text("Page 1 · 12 tasks")).to_be_visible()

        page.get_by_role("button", name="Cancel all…").click()
        question = page.get_by_test_id("stAlertContentWarning").filter(has_text="Cancel 12 tasks?")
        expect(question).to_be_visible()
        expect(question).to_contain_text("They match queue bulkq now.")
        assert client.list_tasks(state="cancelled")["tasks"] == [], "asked, nothing done yet"

        page.get_by_role("button", name="Yes, cancel 12 tasks").click()
        done = page.get_by_test_id("stAlertContentSuccess").filter(has_text="Bulk cancel done")
        expect(done).to_be_visible()
        expect(done).to_contain_text("12 cancelled")

        cancelled = client.list_tasks(state="cancelled", limit=100)["tasks"]
        assert sorted({t["queue"] for t in cancelled}) == ["bulkq"] and len(cancelled) == 12
        queued = client.list_tasks(state="queued", limit=100)["tasks"]
        assert [t["queue"] for t in queued] == ["keepq"] * 3
