"""Operator console for usage: read-only, and safe on a table of hundreds of millions of rows."""

from __future__ import annotations

from typing import cast

from django.contrib import admin
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import QuerySet
from django.http import HttpResponse
from django.utils import timezone
from django.utils.functional import cached_property

from core.db import read_replica, reads_alias
from metering.models import DailyUsage, QuarantinedUsage, UsageRecord
from metering.selectors import daily_usage_csv_lines


class ReplicaListAdmin(admin.ModelAdmin):
    """The list (and its actions, such as the CSV export) reads from the read replica when there
    is one; an object's own page reads from the primary. The queryset is bound when made, as
    the list is read while its template renders, after the view returned."""

    def changelist_view(self, request, extra_context=None):
        with read_replica():
            return super().changelist_view(request, extra_context)

    def get_queryset(self, request):
        return super().get_queryset(request).using(reads_alias())


class ReadOnlyAdmin(admin.ModelAdmin):
    """Usage is derived from real requests: nobody adds, edits or deletes it by hand."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(DailyUsage)
class DailyUsageAdmin(ReplicaListAdmin, ReadOnlyAdmin):
    list_display = (
        "day",
        "org",
        "user",
        "key",
        "model",
        "requests",
        "errors",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
    )
    list_filter = ("model",)
    date_hierarchy = "day"
    search_fields = ("user__email", "=key__public_id", "=org__slug")
    search_help_text = "A member's email, a key's public id or an organization's slug (exact)."
    list_select_related = ("org", "user", "key")
    raw_id_fields = ("org", "user", "key")
    actions = ["export_csv"]

    def lookup_allowed(self, lookup, value, request=None):
        # The organization page links here with ?org__id__exact=N.
        return lookup == "org__id__exact" or super().lookup_allowed(lookup, value, request)

    @admin.action(description="Export selected as CSV")
    def export_csv(self, request, queryset):
        ordered = queryset.order_by("day", "user_id", "key_id", "model")
        body = "".join(daily_usage_csv_lines(queryset=ordered, include_user=True))
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response = HttpResponse(body, content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="daily-usage-{stamp}.csv"'
        return response

    def get_actions(self, request):
        # The bulk delete action is no use on a read-only ledger; keep only the export.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions


COUNT_CAP = 10_000


class EstimatedCountPaginator(Paginator):
    """Never COUNT(*) the whole record table: PostgreSQL's planner estimate for the unfiltered
    list, otherwise a count capped at COUNT_CAP (the last page link then means "and more")."""

    @cached_property
    def count(self) -> int:
        records = cast(QuerySet, self.object_list)  # the admin pages a queryset
        query = records.query
        connection = connections[records.db]
        if connection.vendor == "postgresql" and not query.where:
            with connection.cursor() as cursor:
                # The table's estimate, or its partitions' (a partitioned table has none).
                cursor.execute(
                    "SELECT coalesce((SELECT sum(greatest(c.reltuples, 0)) FROM pg_inherits i "
                    "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass), "
                    "(SELECT reltuples FROM pg_class WHERE oid = %s::regclass))::bigint",
                    [UsageRecord._meta.db_table] * 2,
                )
                row = cursor.fetchone()
            if row and row[0] > COUNT_CAP:  # -1 (never analysed) or small: count exactly below
                return int(row[0])
        return records.order_by()[: COUNT_CAP + 1].count()


@admin.register(UsageRecord)
class UsageRecordAdmin(ReplicaListAdmin, ReadOnlyAdmin):
    list_display = (
        "created_at",
        "request_id",
        "user",
        "key",
        "model",
        "endpoint",
        "outcome",
        "http_status",
        "total_tokens",
        "estimated",
        "latency_ms",
    )
    list_filter = ("outcome", "streamed", "estimated")
    list_select_related = ("user", "key")
    search_fields = ("request_id",)
    search_help_text = "An exact request id (the x-request-id response header)."
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    raw_id_fields = ("user", "key")
    actions = None

    def get_search_results(self, request, queryset, search_term):
        # An exact lookup on the unique index, never LIKE '%…%' over the whole table.
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(request_id=term), False


@admin.register(QuarantinedUsage)
class QuarantinedUsageAdmin(ReadOnlyAdmin):
    """Records the database refused: read them, fix the cause, replay them by hand."""

    list_display = ("created_at", "request_id", "source", "error")
    list_filter = ("source",)
    search_fields = ("=request_id",)
    search_help_text = "An exact request id."
    readonly_fields = ("created_at", "request_id", "source", "error", "raw")
    actions = None
