"""A real browser (Debian's chromium driven by Playwright) against pytest-django's ``live_server``.

Playwright's sync API runs an asyncio event loop in the test thread, so Django would refuse ORM calls
made from that thread (fixtures, assertions, the database flush after each test) as coming "from an
async context". ``DJANGO_ALLOW_ASYNC_UNSAFE`` is the documented escape hatch; it is set only while the
browser runs (module scope) and restored afterwards, so other test modules keep Django's check.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, require_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
TIMEOUT_MS = 15_000
# Where the browser tests save a screenshot of each main page for people to look at (printed at the end).
SCREENSHOTS = Path(
    os.environ.get("CERTMGR_SCREENSHOTS") or Path(__file__).resolve().parents[2] / "var/screenshots"
)
_saved: list[Path] = []


def screenshot_dir() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    _saved.append(SCREENSHOTS)
    return SCREENSHOTS


def pytest_terminal_summary(terminalreporter):
    if _saved:
        count = len(list(SCREENSHOTS.glob("*.png")))
        terminalreporter.write_line(f"screenshots of the main pages ({count} files): {SCREENSHOTS}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so ``page`` can screenshot a failed test."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - depends on the environment
        require_server(False, "the playwright package is not installed")
    chromium = shutil.which(CHROMIUM) or (CHROMIUM if os.access(CHROMIUM, os.X_OK) else None)
    require_server(chromium is not None, f"{CHROMIUM} is missing (apt-get install chromium)")

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
    finally:
        playwright.stop()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def watch_console(page) -> list[str]:
    """What a page's console and scripts report that no page of certmgr may cause: a Content-Security-Policy
    violation (every page must work under the policy certmgr sends), an error logged to the console, an
    uncaught script exception. The list fills as the page runs; a test asserts it stays empty."""
    problems: list[str] = []

    def on_console(message) -> None:
        if message.text.startswith("Failed to load resource") and message.location.get("url") == page.url:
            return  # the page itself answered an error status: the test asserts on navigations' statuses
        if "Content Security Policy" in message.text or message.type == "error":
            where = message.location.get("url") or ""
            problems.append(f"{page.url}: console {message.type}: {message.text} ({where})")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"{page.url}: uncaught {error}"))
    return problems


@pytest.fixture
def page(browser, request, tmp_path_factory) -> Iterator[object]:
    """A fresh browser context (no cookies) per test; a full-page screenshot is saved when the test fails.
    Whatever ``watch_console`` reports (a CSP violation, a console error, an uncaught exception) fails the
    test."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    violations = watch_console(page)
    try:
        yield page
        assert not violations, "\n".join(violations)
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            name = re.sub(r"[^\w.-]+", "_", request.node.name)[:100]
            path = Path(tmp_path_factory.mktemp("screenshots")) / f"{name}.png"
            try:
                page.screenshot(path=str(path), full_page=True)
                print(f"\nscreenshot of the failed page ({page.url}): {path}")
            except Exception as exc:  # the screenshot is a convenience, never the failure
                print(f"\nno screenshot: {exc}")
        context.close()


def login(page, base_url: str, username: str, password: str = PASSWORD) -> None:
    """Sign in through the admin's login form and land on the admin index."""
    response = page.goto(f"{base_url}/admin/login/?next=/admin/")
    assert response is not None and response.status == 200, response and response.status
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    with page.expect_navigation() as navigation:
        page.click("input[type=submit]")
    response = navigation.value
    assert response is not None and response.status == 200, (response and response.status, page.url)
    assert page.url.rstrip("/").endswith("/admin"), (
        f"login as {username} failed: {page.url}\n{page.content()[:2000]}"
    )
    assert page.locator("#user-tools").count() == 1, "no user tools on the admin index: not signed in"
