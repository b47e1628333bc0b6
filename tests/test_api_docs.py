"""/docs works without the internet: Swagger UI's page and assets all come from the scheduler."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from api_fixtures import *  # noqa: F403 - the api fixture
from api_fixtures import ApiServer

CHROMIUM = Path("/usr/bin/chromium")


def test_the_docs_page_loads_only_what_the_scheduler_serves(api: ApiServer) -> None:
    with httpx.Client(base_url=api.url) as http:
        page = http.get("/docs")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        urls = set(re.findall(r"""(?:src|href)=["']([^"']+)""", page.text))
        urls |= set(re.findall(r"""url: ?['"]([^'"]+)""", page.text))
        assert urls, page.text
        for url in urls:
            assert url.startswith("/"), f"/docs loads {url} from elsewhere"
            answer = http.get(url)
            assert answer.status_code == 200, url
        assert "/openapi.json" in urls
        script = next(u for u in urls if "swagger-ui-bundle.js" in u)
        assert "SwaggerUIBundle" in http.get(script).text
        assert http.get("/docs/assets/../../../etc/passwd").status_code == 404
        assert http.get("/docs/assets/index.j2").status_code == 404  # only the listed files


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium")
def test_swagger_ui_renders_with_every_other_host_cut_off(api: ApiServer) -> None:
    from playwright.sync_api import expect, sync_playwright

    elsewhere: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        try:
            page = browser.new_page()

            def air_gap(route) -> None:  # an air-gapped cluster: only the scheduler answers
                if route.request.url.startswith(api.url):
                    route.continue_()
                else:
                    elsewhere.append(route.request.url)
                    route.abort()

            page.route("**/*", air_gap)
            page.goto(f"{api.url}/docs")
            # A hang guard, not a bound: the page took 18 s at load 7 on 2 cores.
            expect(page.get_by_text("/api/v1/tasks/batch").first).to_be_visible(timeout=60_000)
            expect(page.get_by_role("button", name=re.compile("Authorize"))).to_be_visible()
        finally:
            browser.close()
    assert elsewhere == []
