"""A confirmation page for admin bulk actions that change customers' access or traffic.

The action's first POST (from the change list) renders the page: every selected object with
what will change, before → after. Its "Yes" posts the same action and selection back with
`confirmed=yes`, and only then does the action run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from django.contrib.admin import helpers
from django.template.response import TemplateResponse


def confirm_bulk(
    modeladmin,
    request,
    *,
    title: str,
    rows: Iterable[tuple[object, str, str]],
    run: Callable[[], None],
    note: str = "",
):
    """Run `run()` if the staff member confirmed; else the page listing `rows`
    ((object, before, after) per object that would change)."""
    if request.POST.get("confirmed") == "yes":
        run()
        return None
    rows = list(rows)
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "rows": rows,
        "note": note,
        "opts": modeladmin.model._meta,
        "action": request.POST.get("action", ""),
        "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
        "select_across": request.POST.get("select_across", "0"),
        "index": request.POST.get("index", "0"),
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "admin/confirm_bulk.html", context)
