"""Every HTML page carries a Content-Security-Policy, and every page still works under it: no
inline script, no inline handler, nothing loaded from another origin, and inline styles only
while the policy allows them (see portal/csp.py)."""

from __future__ import annotations

import re

from django.test import Client

from portal.csp import policy
from tests.security_routes import all_routes

INLINE_SCRIPT = re.compile(
    r"<script\b(?![^>]*\bsrc=)(?![^>]*type=\"application/(?:ld\+)?json\")"
    r"[^>]*>",
    re.I,
)
HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.I)
JS_URL = re.compile(r"(?:href|src|action)\s*=\s*[\"']?\s*javascript:", re.I)
STYLE_ATTR = re.compile(r"<[^>]+\sstyle\s*=", re.I)
STYLE_BLOCK = re.compile(r"<style\b", re.I)
EXTERNAL = re.compile(
    r"<(?:script|link|img|iframe)\b[^>]*\s(?:src|href)\s*=\s*[\"']?"
    r"(?:https?:)?//",
    re.I,
)


def _directives() -> dict[str, str]:
    return {part.split()[0]: part.strip() for part in policy().split(";")}


def test_the_policy():
    directives = _directives()
    assert directives["default-src"] == "default-src 'self'"
    assert directives["script-src"] == "script-src 'self'"
    assert directives["frame-ancestors"] == "frame-ancestors 'none'"
    assert directives["base-uri"] == "base-uri 'self'"
    assert directives["form-action"] == "form-action 'self'"
    assert directives["img-src"] == "img-src 'self' data:"
    assert directives["object-src"] == "object-src 'none'"


def test_html_gets_the_header_and_json_does_not(client, db):
    page = client.get("/accounts/login/")
    api = client.get("/v1/models")

    assert page["Content-Security-Policy"] == policy()
    assert "Content-Security-Policy" not in api


def _pages(alice, staff):
    anonymous = Client()
    customer = Client()
    customer.force_login(alice)
    operator = Client()
    operator.force_login(staff)
    for route in all_routes():
        if route.params or route.pattern.startswith("v1/"):
            continue
        clients = [operator] if route.pattern.startswith("admin/") else [anonymous, customer]
        for client in clients:
            response = client.get(route.path())
            content_type = response.get("Content-Type", "")
            if response.status_code == 200 and content_type.startswith("text/html"):
                yield route.pattern, response


def test_every_page_works_under_the_policy(alice, staff, catalog):
    allows_inline_style = "'unsafe-inline'" in _directives()["style-src"]
    problems, checked = [], set()
    for pattern, response in _pages(alice, staff):
        checked.add(pattern)
        assert response["Content-Security-Policy"] == policy(), pattern
        html = response.content.decode()
        checks = {
            "inline <script>": INLINE_SCRIPT,
            "inline event handler": HANDLER,
            "javascript: URL": JS_URL,
            "another origin (CDN)": EXTERNAL,
        }
        if not allows_inline_style:
            checks |= {"style attribute": STYLE_ATTR, "<style> block": STYLE_BLOCK}
        for what, pattern_re in checks.items():
            match = pattern_re.search(html)
            if match:
                problems.append(f"{pattern}: {what}: {match.group(0)[:120]}")
    assert not problems, "Pages that the CSP would break:\n" + "\n".join(problems)
    assert {
        "",
        "keys",
        "usage",
        "accounts/login/",
        "accounts/signup/",
        "accounts/2fa/",
        "admin/",
    } <= checked, sorted(checked)


def test_the_checks_catch_what_the_policy_blocks():
    assert INLINE_SCRIPT.search("<script>alert(1)</script>")
    assert not INLINE_SCRIPT.search('<script src="/static/js/portal.js"></script>')
    assert not INLINE_SCRIPT.search('<script type="application/json" id="d">{}</script>')
    assert HANDLER.search('<button onclick="go()">')
    assert EXTERNAL.search('<script src="https://cdn.example.com/x.js">')
    assert EXTERNAL.search('<link rel="stylesheet" href="//cdn.example.com/x.css">')
    assert not EXTERNAL.search('<link rel="stylesheet" href="/static/css/portal.css">')
    assert STYLE_ATTR.search('<div style="width: 3%">')


def test_styles_need_no_unsafe_inline():
    """Issue 23: no page carries a <style> block or a style= attribute any more."""
    assert _directives()["style-src"] == "style-src 'self'"
