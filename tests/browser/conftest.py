"""Browser tests: Playwright for Python driving Debian's Chromium (/usr/bin/chromium, which CI
installs through apt; never `playwright install`) against pytest-django's live server.

Screenshots go to `screenshots/` at the repository root (git-ignored; the README names it).

Every page a test screenshots is also checked by axe-core (vendored: tests/browser/vendor/,
injected into every page of the context as an init script, which the CSP does not apply to),
in the light and the dark theme: any serious or critical violation fails the test.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "screenshots"
AXE = Path(__file__).resolve().parent / "vendor" / "axe.min.js"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


# Package scope (tests/browser/), not session: Playwright's event loop stays on the test thread
# while it runs, and later modules that run asyncio clients of their own (tests/test_serve.py)
# need it gone. One Chromium for the whole package, not one per module: each test still gets a
# fresh context (its own cookies, storage and cache), and launching costs a second or more.
@pytest.fixture(scope="package")
def _async_unsafe_allowed():
    # Playwright's sync API keeps an event loop on the test thread; the ORM calls the test
    # makes itself (fixtures, outbox, aggregation) are still plain synchronous code.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(scope="package")
def browser(_async_unsafe_allowed):
    if not os.path.exists(CHROMIUM):
        pytest.skip(
            f"Chromium not found at {CHROMIUM} (CI installs Debian's `chromium` "
            "package; set CHROMIUM_PATH to use another build)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def context(browser, live_server):
    # Reduced motion: no colour transition caught half-way by a screenshot or by axe.
    ctx = browser.new_context(base_url=live_server.url, viewport=DESKTOP, reduced_motion="reduce")
    ctx.add_init_script(path=str(AXE))
    # Without clipboard permissions (an older Chromium) the test reads the shown text instead.
    with contextlib.suppress(Exception):
        ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    ctx.set_default_timeout(15_000)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context):
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors
    yield page
    assert not errors, f"JavaScript errors on the page: {errors}"


# The innermost elements that stick out past the right edge of the viewport.
_OVERFLOWING = """() => {
  const width = document.documentElement.clientWidth;
  return [...document.querySelectorAll("body *")]
    .filter(el => el.getBoundingClientRect().right > width + 1)
    .filter(el => ![...el.children].some(c => c.getBoundingClientRect().right > width + 1))
    .filter(el => !el.closest(".table-wrap, pre"))
    .slice(0, 5)
    .map(el => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "")
         + (el.className ? "." + String(el.className).trim().split(/\\s+/).join(".") : ""));
}"""


_AXE_RUN = """async () => {
  const result = await axe.run(document, {resultTypes: ["violations"]});
  return result.violations
    .filter(v => v.impact === "serious" || v.impact === "critical")
    .map(v => ({id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 5)
                  .map(n => n.target.join(" ") + ": " + n.failureSummary)}));
}"""


def axe_violations(page) -> list[dict]:
    """axe-core's serious and critical violations on the page as it is now."""
    return page.evaluate(_AXE_RUN)


def assert_accessible(page, name: str) -> None:
    found = axe_violations(page)
    assert not found, f"axe found serious or critical violations on {name}:\n" + json.dumps(
        found, indent=2
    )


# As Playwright measures a full page for page.screenshot(full_page=True): null (wait) while
# a navigation has no body yet.
_FULL_PAGE_SIZE = """() => {
  const body = document.body, root = document.documentElement;
  if (!body || !root) return null;
  return {
    width: Math.max(body.scrollWidth, root.scrollWidth, body.offsetWidth, root.offsetWidth,
                    body.clientWidth, root.clientWidth),
    height: Math.max(body.scrollHeight, root.scrollHeight, body.offsetHeight, root.offsetHeight,
                     body.clientHeight, root.clientHeight),
  };
}"""


def save_full_page(page, path: Path) -> None:
    """page.screenshot(path=path, full_page=True), as Chromium's DevTools protocol takes it with
    its fast PNG encoder (optimizeForSpeed, which Playwright does not expose): the same lossless
    pixels in a bigger file, in about 60 % of the time. The suite writes some 200 of these."""
    page.evaluate("document.fonts.ready.then(() => null)")
    size = page.wait_for_function(_FULL_PAGE_SIZE).json_value()
    viewport = page.viewport_size
    session = page.context.new_cdp_session(page)
    try:
        shot = session.send(
            "Page.captureScreenshot",
            {
                "format": "png",
                "optimizeForSpeed": True,
                "clip": {"x": 0, "y": 0, **size, "scale": 1},
                "captureBeyondViewport": (
                    size["width"] > viewport["width"] or size["height"] > viewport["height"]
                ),
            },
        )
    finally:
        session.detach()
    path.write_bytes(base64.b64decode(shot["data"]))


@pytest.fixture
def screenshot():
    """screenshot(page, name, fits_phone=True): the page at desktop and phone widths, in the
    light and the dark theme, full length (screenshots/<name>-<desktop|phone>-<light|dark>.png);
    axe-core checks it in both themes; fits_phone asserts that nothing makes the phone page
    scroll sideways."""
    SCREENSHOTS.mkdir(exist_ok=True)

    def take(page, name: str, *, fits_phone: bool = True) -> None:
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme, reduced_motion="reduce")
            for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
                page.set_viewport_size(size)
                if label == "desktop":
                    assert_accessible(page, f"{name} ({scheme})")
                save_full_page(page, SCREENSHOTS / f"{name}-{label}-{scheme}.png")
                if label == "phone" and fits_phone:
                    overflow = page.evaluate(
                        "document.documentElement.scrollWidth"
                        " - document.documentElement.clientWidth"
                    )
                    assert overflow <= 1, (
                        f"{name} scrolls sideways on a phone ({overflow}px): "
                        f"{page.evaluate(_OVERFLOWING)}"
                    )
        page.emulate_media(color_scheme="light")
        page.set_viewport_size(DESKTOP)

    return take
