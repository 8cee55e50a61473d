"""How the portal shows times and counts, one way on every page.

`{% when dt %}`: a relative time ("in 42 s", "7 h ago") in a <time> element whose title (hover)
and visually hidden text (screen readers) give the exact UTC time. Takes a datetime or an ISO
string; None shows `default` ("never").

`{% count n "request" %}`: "1 request", "499,946 requests" (grouped, plural form); an irregular
plural is given as a third argument: `{% count n "entry" "entries" %}`.

static/js/portal.js formats JS-rendered numbers and times the same way (window.portal.*).
"""

from __future__ import annotations

from datetime import UTC, datetime

from django import template
from django.contrib.humanize.templatetags.humanize import intcomma
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.html import format_html

register = template.Library()

_UNITS = ((86400, "d"), (3600, "h"), (60, "min"), (1, "s"))
_RELATIVE_LIMIT = 45 * 86400  # past this, a date says more than "212 d ago"


def as_datetime(value) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = parse_datetime(value)
        if value is None:
            return None
    if isinstance(value, datetime):
        if timezone.is_naive(value):
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    return None


def exact(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def relative(value: datetime, now: datetime | None = None) -> str:
    now = now or timezone.now()
    seconds = round((value - now).total_seconds())
    if abs(seconds) < 1:
        return "now"
    if abs(seconds) >= _RELATIVE_LIMIT:
        return value.strftime("%Y-%m-%d")
    for size, unit in _UNITS:
        if abs(seconds) >= size:
            amount = f"{abs(seconds) // size} {unit}"
            return f"in {amount}" if seconds > 0 else f"{amount} ago"
    return "now"  # pragma: no cover - the loop always matches from 1 s up


@register.simple_tag
def when(value, default: str = "never"):
    moment = as_datetime(value)
    if moment is None:
        return default if not value else str(value)
    stamp = moment.isoformat().replace("+00:00", "Z")
    full = exact(moment)
    return format_html(
        '<time datetime="{}" title="{}" data-relative>{}</time>'
        '<span class="visually-hidden"> ({})</span>',
        stamp,
        full,
        relative(moment),
        full,
    )


@register.simple_tag
def count(number, singular: str, plural: str | None = None):
    number = number or 0
    word = singular if number == 1 else (plural or singular + "s")
    return f"{intcomma(number)} {word}"


@register.filter
def grouped(number):
    return intcomma(number if number is not None else 0)
