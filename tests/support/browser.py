"""A real browser for the console's tests: Playwright for Python driving Debian's Chromium.

Playwright's own browser download cannot be fetched here, so the browser is the one
scripts/ensure-browser.sh installs with apt (``/usr/bin/chromium``), and the accessibility
check is axe-core's ``axe.min.js`` from npm, served to the page from a local file.

Fixtures:
  chromium         module    a headless Chromium (one per module: launching costs a second)
  axe_source       module    the text of axe.min.js
  browser_session  function  ``open(base_url, storage_state=None) -> BrowserSession``; each
                             session is its own browser context (its own cookies), closed
                             after the test, and the test fails if any page logged a console
                             error or threw

Every page a session shows is checked (no console error, axe without serious or critical
violations) and screenshotted into test-artifacts/console/<test>/ at the repo root.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Locator,
    Page,
    Playwright,
    Response,
    expect,
    sync_playwright,
)

REPO = Path(__file__).resolve().parents[2]
ENSURE_BROWSER = REPO / "scripts" / "ensure-browser.sh"
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts" / "console"
#: axe's impacts that fail a page (minor and moderate ones are reported by axe, not failed)
FAILING_IMPACTS = ("serious", "critical")
#: how long a page may take to answer (the API runs under gunicorn on a busy 2-core machine)
NAVIGATION_TIMEOUT_MS = 30_000
#: asked for by the browser itself when a page names no icon; the head node answers it as any
#: unknown API path (401): the browser's doing, not the page's
AUTOMATIC_FAVICON = "/favicon.ico"
#: how long an ``expect`` waits for what a page shows (Playwright's default is 5 s)
EXPECT_TIMEOUT_MS = 15_000
#: Chromium's console line for a document or resource answered with an error status
FAILED_LOAD = re.compile(r"Failed to load resource: the server responded with a status of (\d+)")


@pytest.fixture(scope="module")
def axe_source() -> str:
    """axe.min.js, installed once per machine (with Chromium) by scripts/ensure-browser.sh."""
    done = subprocess.run([str(ENSURE_BROWSER)], capture_output=True, text=True, timeout=900,
                          check=False)
    if done.returncode != 0:
        pytest.fail(f"could not install Chromium and axe-core:\n{done.stderr}")
    return Path(done.stdout.strip().splitlines()[-1]).read_text()


@pytest.fixture(scope="module")
def chromium(axe_source: str, request: pytest.FixtureRequest) -> Iterator[Browser]:
    # axe_source first: it is what installs the browser on a fresh machine
    playwright: Playwright = sync_playwright().start()
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    args = ["--disable-dev-shm-usage"]  # a container's /dev/shm is often 64 MiB
    if os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium refuses to run its sandbox as root
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
    try:
        yield browser
    finally:
        browser.close()
        playwright.stop()
        say_where_screenshots_are(request.config)


def say_where_screenshots_are(config: pytest.Config) -> None:
    capture = config.pluginmanager.get_plugin("capturemanager")
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if capture is None or reporter is None:
        return
    with capture.global_and_fixture_disabled():  # past pytest's capture of fixture output
        reporter.write_line(f"\nconsole screenshots: {ARTIFACTS}")


@dataclass
class BrowserSession:
    """One browser context (its own cookie jar) on one page, with every page checked."""

    page: Page
    base_url: str
    axe: str
    shots: Path
    #: the file names' prefix: several sessions of one test share its folder
    prefix: str = ""
    errors: list[str] = field(default_factory=list)
    #: error statuses whose "Failed to load resource" lines are expected right now
    expected_statuses: set[int] = field(default_factory=set)
    visited: int = 0

    def __post_init__(self) -> None:
        self.page.set_default_timeout(NAVIGATION_TIMEOUT_MS)
        self.page.on("console", self._on_console)
        self.page.on("pageerror", lambda exc: self.errors.append(
            f"uncaught exception on {self.page.url}: {exc}"))

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        failed = FAILED_LOAD.search(message.text)
        if failed and int(failed.group(1)) in self.expected_statuses:
            return
        if failed and message.location.get("url", "").endswith(AUTOMATIC_FAVICON):
            return
        self.errors.append(f"console error on {self.page.url}: {message.text} "
                           f"({message.location.get('url', '')})")

    def url(self, path: str) -> str:
        return path if "://" in path else self.base_url + path

    # ------------------------------------------------------------------ moving around

    def visit(self, path: str, status: int = 200, label: str | None = None,
              check: bool = True) -> Response:
        """Open ``path`` (relative to the console), expect ``status``, check the page
        (unless ``check`` is false: the test checks it later)."""
        with self.expecting(status):
            answer = self.page.goto(self.url(path), wait_until="load")
        assert answer is not None, f"no answer for {path}"
        assert answer.status == status, (
            f"GET {path}: {answer.status}, wanted {status}\n{self.page.inner_text('body')[:2000]}")
        if check:
            self.check(label or path)
        return answer

    def submit(self, button: Locator, status: int = 200, label: str | None = None,
               check: bool = True) -> Response:
        """Click a form's submit button, follow its redirect (PRG) and check the page it
        lands on (unless ``check`` is false: the test checks it later); ``status`` is that
        page's status."""
        with self.expecting(status), self.page.expect_navigation(wait_until="load") as landed:
            button.click()
        answer = landed.value
        assert answer is not None, "the form led nowhere"
        assert answer.status == status, (
            f"{answer.request.method} {answer.url}: {answer.status}, wanted {status}\n"
            f"{self.page.inner_text('body')[:2000]}")
        if check:
            self.check(label or answer.url)
        return answer

    @contextlib.contextmanager
    def expecting(self, status: int) -> Iterator[None]:
        """A page answered with an error status on purpose (a 404 for another tenant's
        machine) logs a console error in Chromium: not a fault of the page."""
        if status < 400:
            yield
            return
        self.expected_statuses.add(status)
        try:
            yield
        finally:
            self.expected_statuses.discard(status)

    # ------------------------------------------------------------------ checks

    def check(self, label: str, accessible: bool = True) -> None:
        """The page now shown: a screenshot saved, no console error so far, axe clean
        (``accessible`` false skips axe, for a page a test knows to fail it)."""
        self.page.wait_for_load_state("load")
        self.visited += 1
        self.screenshot(label)
        self.assert_no_errors()
        if accessible:
            assert_accessible(self.page, self.axe)

    def screenshot(self, label: str) -> Path:
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", label.replace(self.base_url, "")).strip("_")
        path = self.shots / f"{self.prefix}{self.visited:02d}-{name[:80] or 'page'}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def assert_no_errors(self) -> None:
        assert not self.errors, "the browser logged errors:\n" + "\n".join(self.errors)


def axe_violations(page: Page, axe_source: str) -> list[dict[str, Any]]:
    """axe-core's violations on the page as shown (evaluated rather than added as a script
    tag, so that the console's Content-Security-Policy, if any, stays in force)."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(axe_source)
    result: dict[str, Any] = page.evaluate(
        "async () => await axe.run(document, {resultTypes: ['violations']})")
    violations: list[dict[str, Any]] = result["violations"]
    return violations


def assert_accessible(page: Page, axe_source: str) -> None:
    serious = [v for v in axe_violations(page, axe_source) if v["impact"] in FAILING_IMPACTS]
    assert not serious, f"axe on {page.url}:\n" + "\n".join(describe(v) for v in serious)


def describe(violation: dict[str, Any]) -> str:
    nodes = violation["nodes"]
    where = "; ".join(" ".join(n["target"]) + f" ({n.get('failureSummary', '')})"
                      .replace("\n", " ") for n in nodes[:5])
    more = f" and {len(nodes) - 5} more" if len(nodes) > 5 else ""
    return (f"  {violation['impact']}: {violation['id']} ({violation['help']}) "
            f"at {where}{more}")


@pytest.fixture
def browser_session(chromium: Browser, axe_source: str,
                    request: pytest.FixtureRequest) -> Iterator[Callable[..., BrowserSession]]:
    """``open(base_url, storage_state=None)`` a new session (one per signed-in person);
    screenshots go to test-artifacts/console/<test name>/, emptied first."""
    test_dir = ARTIFACTS / re.sub(r"[^A-Za-z0-9._-]+", "_", request.node.name)
    shutil.rmtree(test_dir, ignore_errors=True)
    sessions: list[BrowserSession] = []

    def open_session(base_url: str, storage_state: Any = None) -> BrowserSession:
        """``storage_state``: cookies another session saved (``context.storage_state()``),
        to start signed in."""
        test_dir.mkdir(parents=True, exist_ok=True)
        context = chromium.new_context(viewport={"width": 1280, "height": 900},
                                       storage_state=storage_state)
        session = BrowserSession(context.new_page(), base_url.rstrip("/"), axe_source, test_dir,
                                 prefix=f"s{len(sessions) + 1}-")
        sessions.append(session)
        return session

    yield open_session
    for session in sessions:
        session.page.context.close()
    for session in sessions:
        session.assert_no_errors()
