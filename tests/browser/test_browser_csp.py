"""The Content-Security-Policy breaks nothing in a real browser: every portal page loads with no
CSP violation (Chromium reports each one as a `securitypolicyviolation` event)."""

from __future__ import annotations

import time

import pytest
from django.conf import settings
from django.test import Client

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.violatedDirective} blocked ${e.blockedURI || "inline"}`
                    + ` (${e.sourceFile || ""}:${e.lineNumber || ""})`);
});
"""
CUSTOMER_PAGES = [
    "/",
    "/dashboard",
    "/keys",
    "/models",
    "/usage",
    "/requests",
    "/docs",
    "/playground",
    "/accounts/2fa/",
    "/accounts/email/",
    "/accounts/password/change/",
]
STAFF_PAGES = [
    "/admin/",
    "/admin/catalog/router/",
    "/admin/catalog/router/add/",
    "/admin/accounts/user/",
]


def _log_in(context, live_server, user) -> None:
    client = Client()
    client.force_login(user)
    context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                "url": live_server.url,
            }
        ]
    )


# Chromium queues each violation event as a task: one more task after a frame, and the
# violations of everything loaded so far have been reported.
_REPORTED = "() => new Promise(done => requestAnimationFrame(() => setTimeout(done, 0)))"


def _settle(page, pending: set) -> None:
    """Every request the page made has ended, the favicon Chromium asks for after the load
    included, and the violations are reported: a condition, where networkidle waited for
    half a second of network silence on every page."""
    deadline = time.monotonic() + 15
    while True:
        while pending:
            assert time.monotonic() < deadline, f"requests never ended: {[r.url for r in pending]}"
            page.wait_for_timeout(10)  # hands Playwright's events to the handlers
        page.evaluate("document.fonts.ready.then(() => null)")
        page.evaluate(_REPORTED)
        if not pending:  # nothing new was asked for meanwhile
            return


def _violations(page, paths: list[str]) -> list[str]:
    pending: set = set()
    page.on("request", lambda request: pending.add(request))
    page.on("requestfinished", lambda request: pending.discard(request))
    page.on("requestfailed", lambda request: pending.discard(request))
    found = []
    for path in paths:
        response = page.goto(path)
        assert response.status == 200, path
        assert response.headers.get("content-security-policy"), path
        _settle(page, pending)
        found += [f"{path}: {v}" for v in page.evaluate("window.__csp")]
    return found


def test_customer_pages_have_no_csp_violation(context, live_server, catalog, alice, alice_key):
    context.add_init_script(RECORD_VIOLATIONS)
    _log_in(context, live_server, alice)
    page = context.new_page()
    assert _violations(page, CUSTOMER_PAGES) == []


def test_admin_pages_have_no_csp_violation(context, live_server, catalog, staff):
    context.add_init_script(RECORD_VIOLATIONS)
    _log_in(context, live_server, staff)
    page = context.new_page()
    assert _violations(page, STAFF_PAGES) == []


def test_a_violation_would_be_seen(context, live_server, alice):
    """Not vacuous: an inline script on one of our pages is reported."""
    context.add_init_script(RECORD_VIOLATIONS)
    _log_in(context, live_server, alice)
    page = context.new_page()
    page.goto("/keys")
    page.evaluate("""() => { const s = document.createElement("script");
                             s.textContent = "window.__ran = 1"; document.body.append(s); }""")
    page.wait_for_function("window.__csp.some(v => v.includes('script-src'))")
    assert page.evaluate("window.__ran") is None
    assert any("script-src" in v for v in page.evaluate("window.__csp"))


def test_an_inline_style_would_be_seen(context, live_server, alice):
    """Not vacuous for styles either: a style= attribute in markup is blocked and reported."""
    context.add_init_script(RECORD_VIOLATIONS)
    _log_in(context, live_server, alice)
    page = context.new_page()
    page.goto("/keys")
    page.evaluate(
        """() => { const d = document.createElement("div");
                   d.innerHTML = '<p id="styled" style="color: rgb(255, 0, 0)">x</p>';
                   document.body.append(d); }"""
    )
    page.wait_for_function("window.__csp.some(v => v.includes('style-src'))")
    assert page.evaluate("getComputedStyle(document.getElementById('styled')).color") != (
        "rgb(255, 0, 0)"
    )
    assert any("style-src" in v for v in page.evaluate("window.__csp"))
