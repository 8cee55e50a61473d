"""The staff insights page (linked from the admin index) and a CSV behind each of its charts."""

from __future__ import annotations

import csv
import io

from django.contrib.admin.views.decorators import staff_member_required
from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from ops.insights import LIMIT_NAMES, Series, funnel, insights_build, series, top_customers
from ops.views import embedded_catch_up

# Refusals have their own chart, by the limit that bound.
ERROR_COLUMNS = ("upstream_errors", "timeouts", "client_errors", "cancelled")


def _per_model(data: Series, column: str) -> list[dict]:
    return [
        {"name": model, "values": [getattr(r, column) if r else 0 for r in rows]}
        for model, rows in sorted(data.by_model.items())
    ]


def _latency(data: Series, column: str) -> list[dict]:
    return [
        {"name": model, "values": [getattr(r, column) if r else None for r in rows]}
        for model, rows in sorted(data.by_model.items())
    ]


def _errors(data: Series) -> list[dict]:
    found = []
    for model, rows in sorted(data.by_model.items()):
        for column in ERROR_COLUMNS:
            values = [getattr(r, column) if r else 0 for r in rows]
            if any(values):
                found.append({"name": f"{model} {column.replace('_', ' ')}", "values": values})
    return found


def charts(data: Series) -> list[dict]:
    """Every chart of the page: {name, title, kind (stacked bars or lines), series}."""
    activity = data.activity
    return [
        {
            "name": "activity",
            "title": "Active customers and keys",
            "kind": "lines",
            "series": [
                {"name": "customers", "values": [a.active_customers if a else 0 for a in activity]},
                {"name": "keys", "values": [a.active_keys if a else 0 for a in activity]},
            ],
        },
        {
            "name": "requests",
            "title": "Requests by model",
            "kind": "bars",
            "series": _per_model(data, "requests"),
        },
        {
            "name": "tokens",
            "title": "Tokens by model",
            "kind": "bars",
            "series": _per_model(data, "total_tokens"),
        },
        {
            "name": "refusals",
            "title": "Refusals by the limit that bound",
            "kind": "bars",
            "series": [
                {"name": LIMIT_NAMES.get(k, k), "values": v}
                for k, v in sorted(data.refusals.items())
            ],
        },
        {
            "name": "errors",
            "title": "Errors by model and outcome",
            "kind": "bars",
            "series": _errors(data),
        },
        {
            "name": "latency",
            "title": "Latency p50 and p95 (ms)",
            "kind": "lines",
            "series": [
                s | {"name": f"{s['name']} {p}"}
                for p, col in (("p50", "latency_p50_ms"), ("p95", "latency_p95_ms"))
                for s in _latency(data, col)
            ],
        },
        {
            "name": "ttfb",
            "title": "Time to first byte p50 and p95 (ms)",
            "kind": "lines",
            "series": [
                s | {"name": f"{s['name']} {p}"}
                for p, col in (("p50", "ttfb_p50_ms"), ("p95", "ttfb_p95_ms"))
                for s in _latency(data, col)
            ],
        },
    ]


@require_GET
@staff_member_required
def insights_page(request):
    embedded_catch_up("insights", lambda: insights_build(day=timezone.now().date()))
    data = series()
    drawn = charts(data)
    return render(
        request,
        "ops/insights.html",
        {
            "funnel": funnel(),
            "charts": drawn,
            "chart_data": {"days": [d.isoformat() for d in data.days], "charts": drawn},
            "top": top_customers(),
            "generated_at": timezone.now(),
        },
    )


def _csv(name: str, header: list[str], rows) -> HttpResponse:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    response = HttpResponse(out.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="insights-{name}.csv"'
    return response


@require_GET
@staff_member_required
def insights_csv(request, name: str):
    if name == "funnel":
        weeks = funnel()
        return _csv(
            name,
            ["week", "signed_up", "verified", "first_key", "first_success", "active_next_week"],
            [
                [w.week, w.signed_up, w.verified, w.first_key, w.first_success, w.active_next_week]
                for w in weeks
            ],
        )
    if name == "top":
        return _csv(
            name,
            ["customer", "plan", "tokens_this_month", "monthly_token_quota"],
            [
                [c.name, c.plan, c.tokens, c.quota if c.quota is not None else ""]
                for c in top_customers()
            ],
        )
    data = series()
    chart = next((c for c in charts(data) if c["name"] == name), None)
    if chart is None:
        raise Http404("No such chart.")
    # Long form: one line per day and series, which every spreadsheet pivots.
    return _csv(
        name,
        ["day", "series", "value"],
        [
            [day, s["name"], "" if s["values"][i] is None else s["values"][i]]
            for i, day in enumerate(data.days)
            for s in chart["series"]
        ],
    )
