"""The running dashboard in a real browser: headless Chromium shows live numbers from the API.

`streamlit run` serves the dashboard in a subprocess; the scheduler is the real app on this
test's Redis namespace. Needs Debian's Chromium at /usr/bin/chromium (`apt-get install -y
chromium`); Playwright drives it, its own browser download is never used.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from api_fixtures import *  # noqa: F403 - the api / api_factory fixtures
from api_fixtures import ApiServer
from dashboard_support import dashboard_process

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium (apt-get install chromium)"
    ),
]


@pytest.fixture
def dashboard(api: ApiServer, tmp_path: Path) -> Iterator[str]:
    with dashboard_process(api.url, tmp_path / "streamlit.log") as url:
        yield url


@pytest.fixture
def browser_page() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            yield page
        finally:
            browser.close()


def test_overview_shows_live_counts_from_the_api(api: ApiServer, dashboard: str, browser_page) -> None:
    from playwright.sync_api import expect

    with api.client() as client:
        client.submit_batch([{"name": "echo", "args": [i]} for i in range(7)])
        page = browser_page
        page.goto(dashboard)
        expect(page.get_by_role("heading", name="Overview")).to_be_visible(timeout=20_000)
        queued = page.get_by_test_id("stMetric").filter(has_text=re.compile(r"^.*queued")).first
        expect(queued.get_by_test_id("stMetricValue")).to_have_text("7", timeout=20_000)

        # More work arrives; the page updates itself, without a reload.
        client.submit_batch([{"name": "echo", "args": [i]} for i in range(5)])
        expect(queued.get_by_test_id("stMetricValue")).to_have_text("12", timeout=15_000)
        workers = page.get_by_test_id("stMetric").filter(has_text="Workers up").first
        expect(workers.get_by_test_id("stMetricValue")).to_have_text("0")


def test_a_task_link_opens_its_detail_and_explanation(api: ApiServer, dashboard: str, browser_page) -> None:
    from playwright.sync_api import expect

    with api.client() as client:
        task = client.submit("sleep", [1], queue="nightly")
    page = browser_page
    page.goto(f"{dashboard}/tasks?task={task['id']}")
    expect(page.get_by_role("heading", name="Tasks")).to_be_visible(timeout=20_000)
    expect(page.get_by_test_id("stCode").filter(has_text=task["id"])).to_be_visible(timeout=20_000)
    expect(page.get_by_text("Why is it not running?")).to_be_visible()
    expect(page.get_by_text("SHOAL_QUEUES=nightly")).to_be_visible()
