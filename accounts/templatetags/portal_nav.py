"""`{% nav_link href label %}`: a nav link that marks the current section for screen readers."""

from __future__ import annotations

from django import template
from django.utils.html import format_html
from django.utils.safestring import mark_safe

register = template.Library()


def is_current(path: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/")
    if not prefix:
        return path == "/"
    return path == prefix or path.startswith(prefix + "/")


@register.simple_tag(takes_context=True)
def nav_link(context, href: str, label: str, match: str | None = None, css: str = ""):
    request = context.get("request")
    current = request is not None and is_current(request.path, match or href)
    return format_html(
        '<a href="{}"{}{}>{}</a>',
        href,
        format_html(' class="{}"', css) if css else "",
        mark_safe(' aria-current="page"') if current else "",
        label,
    )
