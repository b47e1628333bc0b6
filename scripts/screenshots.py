"""Screenshots of every dashboard page, taken from a real, busy Shoal, for docs/img/.

    .venv/bin/python scripts/screenshots.py            # writes docs/img/*.png

Starts a scheduler (whose autoscaler runs local workers) and the dashboard on free ports,
in a private Redis namespace it deletes afterwards; loads the demo work by clicking the
Submit page's buttons in headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright), then visits each page in the same browser session, so the live charts have
history, and saves one PNG per page.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shoal import Client  # noqa: E402 - after the path set-up above
from shoal.core.keys import Keys  # noqa: E402
from shoal.redis_local import ensure_redis, free_port  # noqa: E402

CHROMIUM = "/usr/bin/chromium"


def log(message: str) -> None:
    print(f"[screenshots] {message}", flush=True)


class Stack:
    """Scheduler, workers and dashboard as child processes of this script."""

    def __init__(self, redis_url: str, namespace: str, logs: Path) -> None:
        self.redis_url = redis_url
        self.namespace = namespace
        self.logs = logs
        self.api_url = f"http://127.0.0.1:{free_port()}"
        self.dashboard_url = f"http://127.0.0.1:{free_port()}"
        self.procs: list[subprocess.Popen[bytes]] = []

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("SHOAL_API_TOKEN", None)
        env.update(
            PYTHONPATH=str(ROOT),
            SHOAL_REDIS_URL=self.redis_url,
            SHOAL_NAMESPACE=self.namespace,
            SHOAL_API_URL=self.api_url,
            SHOAL_LOG_LEVEL="WARNING",
            SHOAL_LOG_FORMAT="text",
            # Small workers, so the demo load lasts long enough to watch.
            SHOAL_CONCURRENCY="3",
            SHOAL_QUEUES="default,reports",
            SHOAL_WORKER_PORT="0",
            SHOAL_SCALER_BACKEND="local",
            SHOAL_SCALER_MIN_REPLICAS="1",
            SHOAL_SCALER_MAX_REPLICAS="5",
            SHOAL_SCALER_INTERVAL_S="2",
            SHOAL_SCALER_SCALE_DOWN_WINDOW_S="20",
            SHOAL_SCALER_MAX_STEP_UP="2",
            **extra,
        )
        return env

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        out = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=out, cwd=ROOT)
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        port = self.api_url.rsplit(":", 1)[1]
        self.spawn(
            "scheduler",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "shoal.scheduler.main:app",
                "--port",
                port,
                "--no-access-log",
            ],
            self.env(),
        )
        wait_for(f"{self.api_url}/readyz", "the scheduler")
        dash_port = self.dashboard_url.rsplit(":", 1)[1]
        self.spawn(
            "dashboard",
            [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", dash_port,
             "--server.address", "127.0.0.1", "--server.headless", "true",
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
            self.env(),
        )  # fmt: skip
        wait_for(f"{self.dashboard_url}/_stcore/health", "the dashboard")

    def wait_for_workers(self, client: Client, timeout_s: float = 30.0) -> None:
        """The scheduler's autoscaler (local backend) starts the first worker on its own."""
        deadline = time.monotonic() + timeout_s
        while not any(w["state"] == "active" for w in client.workers()):
            if time.monotonic() > deadline:
                raise SystemExit("no worker started: is the autoscaler running in the scheduler?")
            time.sleep(0.3)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=25)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_for(url: str, what: str, timeout_s: float = 40.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"{what} did not come up at {url}")


@contextlib.contextmanager
def private_namespace(redis_url: str) -> Iterator[str]:
    namespace = f"screenshots-{uuid.uuid4().hex[:8]}"
    try:
        yield namespace
    finally:
        r = redis.Redis.from_url(redis_url)
        keys = list(r.scan_iter(match=Keys(namespace).pattern(), count=1000))
        for i in range(0, len(keys), 1000):
            r.delete(*keys[i : i + 1000])
        r.close()


def shoot(stack: Stack, out: Path, width: int, warmup_s: float) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        page = browser.new_page(viewport={"width": width, "height": 1000}, device_scale_factor=1)

        def go(name: str) -> None:
            page.get_by_test_id("stSidebarNav").get_by_role("link", name=name).click()
            expect(page.get_by_role("heading", name=name, exact=True)).to_be_visible(timeout=20_000)

        def save(name: str, settle_s: float = 3.0) -> None:
            page.mouse.move(0, 0)  # no hover toolbars in the picture
            time.sleep(settle_s)  # charts draw after the numbers arrive
            # The page scrolls inside Streamlit's main container, so grow the window to fit it.
            height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
            page.set_viewport_size({"width": width, "height": max(900, int(height))})
            time.sleep(1.5)
            path = out / f"{name}.png"
            page.screenshot(path=str(path))
            page.set_viewport_size({"width": width, "height": 1000})
            log(f"saved {path.relative_to(ROOT)}")

        page.goto(stack.dashboard_url)
        expect(page.get_by_role("heading", name="Overview")).to_be_visible(timeout=30_000)
        time.sleep(4)  # a few quiet samples first, so the charts show the load arriving

        go("Submit")
        expect(page.get_by_role("button", name="Load 1,000 mixed tasks")).to_be_enabled(timeout=20_000)
        page.get_by_role("button", name="Load 1,000 mixed tasks").click()
        expect(page.get_by_text("Submitted the mixed load: 1000 tasks.")).to_be_visible(timeout=30_000)
        # Behind the mixed load, so the graph shows the DAG at work.
        page.get_by_role("button", name="Load a DAG of 50").click()
        expect(page.get_by_text("Submitted the DAG: 50 tasks.")).to_be_visible(timeout=20_000)
        save("submit", settle_s=0.5)

        go("Tasks")  # first, while the DAG is at work
        with Client(stack.api_url, token="") as client:
            # The DAG's last task: it waits on the whole last layer, so its graph is the DAG.
            join = next(t for t in client.iter_tasks() if len(t["depends_on"]) > 2 and t["args"] == [0.1])
        page.get_by_placeholder("paste an id to open it").fill(join["id"])
        page.keyboard.press("Enter")
        expect(page.get_by_test_id("stCode").filter(has_text=join["id"])).to_be_visible(timeout=20_000)
        page.get_by_role("tab", name="Dependencies").click()
        save("tasks", settle_s=1)

        go("Overview")
        time.sleep(warmup_s)
        save("overview", settle_s=0)
        go("Queues")
        save("queues", settle_s=1)
        go("Workers")
        save("workers", settle_s=1)
        go("Scaling")
        save("scaling")
        browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="where the PNGs go")
    parser.add_argument("--width", type=int, default=1440, help="browser width in pixels")
    parser.add_argument("--warmup", type=float, default=8.0, help="seconds on the overview before the shot")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        print(f"needs Chromium at {CHROMIUM}: apt-get install -y chromium", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    redis_url = ensure_redis(os.environ.get("SHOAL_REDIS_URL", "redis://127.0.0.1:6379/0")).url
    logs = ROOT / "run" / "screenshots"
    logs.mkdir(parents=True, exist_ok=True)
    with private_namespace(redis_url) as namespace:
        stack = Stack(redis_url, namespace, logs)
        try:
            stack.start()
            with Client(stack.api_url, token="") as client:
                stack.wait_for_workers(client)
            shoot(stack, args.out, args.width, args.warmup)
        finally:
            stack.stop()
    log(f"done; process logs in {logs.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
