"""The browser harness (tests/support/browser.py) catches what it is there to catch: a
console error, an uncaught exception, an axe violation; and it lets a clean page through
with its screenshot. Pages served from a temporary folder on 127.0.0.1 (no head node)."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import browser
from tests.support.browser import BrowserSession

# the browser's fixtures, for this module's tests
chromium, axe_source = browser.chromium, browser.axe_source
browser_session = browser.browser_session

HEAD = '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
PAGES = {
    "clean.html": HEAD.format(title="Clean") + "</head><body><main><h1>Clean</h1>"
    '<label for="n">Name</label><input id="n" name="n"></main></body></html>',
    "logs.html": HEAD.format(title="Logs") + '<script src="logs.js"></script></head>'
    "<body><main><h1>Logs</h1></main></body></html>",
    "logs.js": 'console.error("something broke on purpose");',
    "throws.html": HEAD.format(title="Throws") + '<script src="throws.js"></script></head>'
    "<body><main><h1>Throws</h1></main></body></html>",
    "throws.js": 'throw new Error("thrown on purpose");',
    "missing-style.html": HEAD.format(title="Missing") + '<link rel="stylesheet" '
    'href="no-such.css"></head><body><main><h1>Missing</h1></main></body></html>',
    "inaccessible.html": "<!doctype html><html><head><meta charset='utf-8'></head><body>"
    '<input name="unlabelled"><img src="clean.html"></body></html>',
}


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - its name
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("site")
    for name, text in PAGES.items():
        (root / name).write_text(text)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


Open = Callable[..., BrowserSession]


def test_a_clean_page_passes_and_is_screenshotted(browser_session: Open, site: str) -> None:
    session = browser_session(site)
    session.visit("/clean.html", label="clean")
    shots = list(session.shots.glob("*clean.png"))
    assert len(shots) == 1 and shots[0].stat().st_size > 0


@pytest.mark.parametrize(("page", "said"), [
    ("/logs.html", "something broke on purpose"),
    ("/throws.html", "thrown on purpose"),
    ("/missing-style.html", "status of 404"),
])
def test_a_console_error_fails_the_page(browser_session: Open, site: str, page: str,
                                        said: str) -> None:
    session = browser_session(site)
    with pytest.raises(AssertionError, match=said):
        session.visit(page)
    session.errors.clear()  # caught here: the fixture's own check at the end is not the test


def test_an_expected_error_status_is_no_console_error(browser_session: Open,
                                                      site: str) -> None:
    session = browser_session(site)
    session.visit("/no-such-page", status=404, check=False)
    session.check("not-found", accessible=False)  # the stdlib's error page is not ours
    with pytest.raises(AssertionError, match="404, wanted 200"):
        session.visit("/no-such-page", check=False)
    # unexpected, that 404 was a console error as well
    assert any("status of 404" in error for error in session.errors), session.errors
    session.errors.clear()


def test_serious_axe_violations_fail_the_page(browser_session: Open, site: str) -> None:
    session = browser_session(site)
    with pytest.raises(AssertionError) as refused:
        session.visit("/inaccessible.html")
    for rule in ("html-has-lang", "document-title", "image-alt", "label"):
        assert rule in str(refused.value)
    assert Path(session.shots).is_dir()
