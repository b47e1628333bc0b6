"""The running dashboard in a real browser: headless Chromium shows live numbers from the API.

`streamlit run` serves the dashboard in a subprocess; the scheduler is the real app on this
test's Redis namespace. Needs Debian's Chromium at /usr/bin/chromium (`apt-get install -y
chromium`); Playwright drives it, its own browser download is never used.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from api_fixtures import *  # noqa: F403 - the api / api_factory fixtures
from api_fixtures import ApiServer
from dashboard_support import dashboard_process, finish_tasks
from shoal import task_request

CHROMIUM = Path("/usr/bin/chromium")
# Every wait for the page (Playwright's default for actions and expect() here): a hang guard, not a
# bound. At load 8 on 2 cores a first render took over 20 s; the page updates itself meanwhile.
UI_WAIT_MS = 60_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium (apt-get install chromium)"
    ),
]


def open_tab(page, name: str | re.Pattern[str]) -> None:  # type: ignore[no-untyped-def]
    """Click a tab until it stays selected: a live refresh that changes the set of tabs (a retried
    task loses its Error tab) puts Streamlit back on the first one and can swallow a click. While
    the new set replaces the old, both are on the page for a moment (two tabs of the name: seen
    with two CPU burners beside the test); the next try meets one."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect

    tab = page.get_by_role("tab", name=name)
    deadline = time.monotonic() + UI_WAIT_MS / 1000
    while True:
        try:
            tab.click()
            expect(tab).to_have_attribute("aria-selected", "true", timeout=2_000)
            time.sleep(0.5)  # past the rerun that was under way, if any
            expect(tab).to_have_attribute("aria-selected", "true", timeout=2_000)
            return
        except (AssertionError, PlaywrightError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture
def dashboard(api: ApiServer, tmp_path: Path) -> Iterator[str]:
    with dashboard_process(api.url, tmp_path / "streamlit.log") as url:
        yield url


@pytest.fixture
def browser_page() -> Iterator:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(UI_WAIT_MS)
        expect.set_options(timeout=UI_WAIT_MS)
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
        expect(page.get_by_role("heading", name="Overview")).to_be_visible()
        queued = page.get_by_test_id("stMetric").filter(has_text=re.compile(r"^.*queued")).first
        expect(queued.get_by_test_id("stMetricValue")).to_have_text("7")

        # More work arrives; the page updates itself, without a reload.
        client.submit_batch([{"name": "echo", "args": [i]} for i in range(5)])
        expect(queued.get_by_test_id("stMetricValue")).to_have_text("12")
        workers = page.get_by_test_id("stMetric").filter(has_text="Workers up").first
        expect(workers.get_by_test_id("stMetricValue")).to_have_text("0")


def test_a_task_link_opens_its_detail_and_explanation(api: ApiServer, dashboard: str, browser_page) -> None:
    from playwright.sync_api import expect

    with api.client() as client:
        task = client.submit_request(task_request("sleep", [1], queue="nightly"))
    page = browser_page
    page.goto(f"{dashboard}/tasks?task={task['id']}")
    expect(page.get_by_role("heading", name="Tasks")).to_be_visible()
    expect(page.get_by_test_id("stCode").filter(has_text=task["id"])).to_be_visible()
    expect(page.get_by_text("Why is it not running?")).to_be_visible()
    expect(page.get_by_text("SHOAL_QUEUES=nightly")).to_be_visible()


@pytest.fixture
def attacker() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server standing for an attacker's host: its URL, and every path anyone asked it for."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


def test_plain_value_results_render_as_values(
    api: ApiServer, dashboard: str, browser_page, redis_url: str, namespace: str
) -> None:
    from playwright.sync_api import expect

    with api.client() as client:
        number, text = (
            client.submit_request(task_request("echo"))["id"],
            client.submit_request(task_request("echo"))["id"],
        )
    finish_tasks(redis_url, namespace, results={number: 1.07, text: "ok"})
    page = browser_page
    for task_id, shown, kind in ((number, "1.07", "number"), (text, "ok", "string of 2 characters")):
        page.goto(f"{dashboard}/tasks?task={task_id}")
        code = page.get_by_test_id("stCode").filter(has_text=re.compile(rf"^\s*{re.escape(shown)}\s*$"))
        expect(code).to_be_visible()
        expect(page.get_by_text(kind, exact=True)).to_be_visible()
        for broken in ("src property must be a valid json object", "Json Parse Error"):
            expect(page.get_by_text(broken)).to_have_count(0)


def test_a_task_error_with_markdown_shows_as_text_and_fetches_nothing(
    api: ApiServer, dashboard: str, browser_page, redis_url: str, namespace: str, attacker
) -> None:
    from playwright.sync_api import expect

    host, hits = attacker
    error = (
        f"boom ![pixel]({host}/pixel.png) [click me]({host}/phish) {host}/bare "
        f'<img src="{host}/html.png"> **loud** :red[red]'
    )
    with api.client() as client:
        task = client.submit_request(task_request("fail", max_retries=0))
    finish_tasks(redis_url, namespace, errors={task["id"]: error})
    page = browser_page
    page.goto(f"{dashboard}/tasks?task={task['id']}")
    # The explanation quotes the error, character for character, as text.
    alert = page.get_by_test_id("stAlertContentError").filter(has_text="failed for good")
    expect(alert).to_be_visible()
    assert error in alert.inner_text().replace("\u2060", "")
    open_tab(page, "Error")
    expect(page.get_by_test_id("stCode").filter(has_text="![pixel]")).to_be_visible()
    page.wait_for_load_state("networkidle")
    # No element points at the attacker's host, and the browser never asked it for anything.
    assert page.locator(f'img[src^="{host}"], a[href^="{host}"], [srcset*="{host}"]').count() == 0
    assert page.locator("strong", has_text="loud").count() == 0
    assert hits == []


def test_sign_in_as_viewer_reads_and_as_operator_acts(api_factory, browser_page, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    from shoal.dashboard.auth import account_line

    tokens = {
        "api_token": "admin-token-0123456789",
        "api_read_token": "reader-token-0123456789",
        "api_dashboard_token": "dashboard-token-0123456789",
    }
    api = api_factory(**tokens)
    users = tmp_path / "users"
    users.write_text(
        account_line("victor", "viewer", "victor-password-1")
        + "\n"
        + account_line("alice", "operator", "alice-password-1")
    )
    with api.client() as client:
        task = client.submit_request(task_request("echo", queue="nobody-serves-this"))
    with dashboard_process(
        api.url,
        tmp_path / "dashboard.log",
        SHOAL_DASHBOARD_AUTH="accounts",
        SHOAL_DASHBOARD_USERS_FILE=str(users),
        SHOAL_DASHBOARD_SESSION_SECRET="s" * 40,
        SHOAL_API_DASHBOARD_TOKEN=tokens["api_dashboard_token"],
        SHOAL_API_READ_TOKEN=tokens["api_read_token"],
    ) as dashboard:
        page = browser_page

        def sign_in(name: str, password: str) -> None:
            page.goto(f"{dashboard}/tasks?task={task['id']}")
            expect(page.get_by_role("heading", name="Shoal dashboard")).to_be_visible()
            page.get_by_label("User").fill(name)
            page.get_by_label("Password").fill(password)
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_test_id("stCode").filter(has_text=task["id"])).to_be_visible()

        sign_in("victor", "victor-password-1")
        expect(page.get_by_text("victor · viewer: reads only")).to_be_visible()
        expect(page.get_by_role("button", name="Cancel", exact=True)).to_be_disabled()
        expect(page.get_by_role("link", name="Submit")).to_have_count(0)  # no Submit page for viewers

        page.get_by_role("link", name="Sign out").click()
        expect(page.get_by_role("button", name="Sign in")).to_be_visible()

        sign_in("alice", "alice-password-1")
        expect(page.get_by_text("alice · operator: may act")).to_be_visible()
        expect(page.get_by_role("link", name="Submit")).to_be_visible()
        page.get_by_role("button", name="Cancel", exact=True).click()
        expect(page.get_by_text(f"Cancelled {task['id']}")).to_be_visible()
    with api.client() as client:
        assert client.get(task["id"])["state"] == "cancelled"


def test_a_tasks_logs_show_per_attempt_as_text(
    api: ApiServer, dashboard: str, browser_page, redis_url: str, namespace: str
) -> None:
    from playwright.sync_api import expect

    from dashboard_support import save_logs

    with api.client() as client:
        task = client.submit_request(task_request("echo"))
    finish_tasks(redis_url, namespace, results={task["id"]: "ok"})
    save_logs(redis_url, namespace, task["id"], 1, "processing row 1\n**not bold** row 2 done\n")
    page = browser_page
    page.goto(f"{dashboard}/tasks?task={task['id']}")
    open_tab(page, "Logs")
    expect(page.get_by_text("Attempt 1", exact=True)).to_be_visible()
    box = page.get_by_test_id("stCode").filter(has_text="processing row 1")
    expect(box).to_be_visible()
    assert "**not bold** row 2 done" in box.inner_text()


def test_a_dag_is_retried_in_place_from_the_failed_task(
    api: ApiServer, dashboard: str, browser_page, redis_url: str, namespace: str
) -> None:
    from playwright.sync_api import expect

    with api.client() as client:
        parent, child, grandchild = client.submit_batch(
            [
                task_request("fail", ref="p", max_retries=0),
                task_request("echo", ref="c", depends_on=["p"]),
                task_request("echo", depends_on=["c"]),
            ]
        )
        finish_tasks(redis_url, namespace, errors={parent["id"]: "ValueError: the feed was late"})
        assert client.get(grandchild["id"])["state"] == "upstream_failed"
        page = browser_page
        # The stranded task says which task to retry, and with what.
        page.goto(f"{dashboard}/tasks?task={child['id']}")
        advice = page.get_by_test_id("stAlertContentError").filter(has_text="with its dependents")
        expect(advice).to_be_visible()
        assert f"Retry {parent['id']} with its dependents" in advice.inner_text().replace("\u2060", "")
        # From the failed task, one click brings the whole DAG below it back, under the same ids.
        page.goto(f"{dashboard}/tasks?task={parent['id']}")
        page.get_by_role("button", name="Retry with dependents").click()
        expect(page.get_by_text(f"Queued {parent['id']} again")).to_be_visible()
        states = [client.get(t["id"])["state"] for t in (parent, child, grandchild)]
        assert states == ["queued", "pending", "pending"]
        # The graph of the retried task shows what waits on it again.
        open_tab(page, re.compile(r"^Dependencies"))
        nodes = page.locator("svg g.node text", has_text="pending")  # the graph's own node labels
        expect(nodes.first).to_be_visible()
        assert nodes.count() == 2  # the child and the grandchild, both waiting again
        finish_tasks(redis_url, namespace, results={parent["id"]: "fed"})
        assert client.get(child["id"])["state"] == "queued"
