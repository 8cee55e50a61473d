import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

try:
    from django.core.wsgi import get_wsgi_application

    application = get_wsgi_application()
except Exception as exc:
    from portal.env import ConfigError

    if isinstance(exc, ConfigError):
        print(f"configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    raise
