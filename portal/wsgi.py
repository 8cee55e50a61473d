"""WSGI entry point: the API under /v1/ through a lean middleware stack, everything else
through the full one.

/v1/ is authenticated by API key and never uses sessions, CSRF, messages, allauth or a CSP
(its answers are JSON): running that page middleware on every API call cost about a quarter of
a worker's time (BENCHMARKS.md). settings.API_MIDDLEWARE is the /v1/ stack.
"""

import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

try:
    import django
    from django.conf import settings
    from django.core.handlers.wsgi import WSGIHandler

    django.setup(set_prefix=False)

    class ApiWSGIHandler(WSGIHandler):
        def load_middleware(self, is_async=False):
            full = settings.MIDDLEWARE
            settings.MIDDLEWARE = settings.API_MIDDLEWARE
            try:
                super().load_middleware(is_async)
            finally:
                settings.MIDDLEWARE = full

    pages = WSGIHandler()
    api = ApiWSGIHandler()

    def application(environ, start_response):
        if environ.get("PATH_INFO", "").startswith("/v1/"):
            return api(environ, start_response)
        return pages(environ, start_response)

except Exception as exc:
    from core.env import ConfigError

    if isinstance(exc, ConfigError):
        print(f"configuration error: {exc}", file=sys.stderr)
        # gunicorn's APP_LOAD_ERROR: its master stops instead of respawning workers that
        # cannot start.
        sys.exit(4)
    raise
