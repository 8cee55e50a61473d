import os

from celery import Celery
from celery.signals import setup_logging

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@setup_logging.connect
def _portal_logging(**kwargs) -> None:
    """The worker and beat log through settings.LOGGING, as the web does: JSON lines with the
    same fields in production (core.logging.JsonFormatter), not Celery's own text format.
    Python warnings (Celery's warning about running as root, deprecations) become log lines
    too, rather than raw text in the middle of the JSON."""
    import logging
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)
    logging.captureWarnings(True)
