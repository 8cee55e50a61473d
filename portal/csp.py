"""A Content-Security-Policy on every HTML page (Django 5.2 has none built in).

Pages load scripts and styles only from our own origin (static/, no CDN), and no inline style
either: no `<style>` block, no `style=` attribute (scripts may still set element.style, which
CSP allows). CSP_STYLE_SRC overrides it. JSON answers get no policy: nothing renders them, and
the API's clients are not browsers.
"""

from __future__ import annotations

from django.conf import settings


def policy() -> str:
    style = settings.CSP_STYLE_SRC
    return (
        "default-src 'self'; img-src 'self' data:; "
        f"style-src {style}; script-src 'self'; object-src 'none'; "
        "frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
    )


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        self.header = policy()

    def __call__(self, request):
        response = self.get_response(request)
        if (
            response.get("Content-Type", "").startswith("text/html")
            and "Content-Security-Policy" not in response
        ):
            response["Content-Security-Policy"] = self.header
        return response
