"""Incidents (written by staff, shown on /status) and the status history, read-only."""

from django.contrib import admin
from django.utils import timezone

from metering.admin import ReadOnlyAdmin
from ops.models import Incident, IncidentUpdate, ModelDay, ModelHealth
from ops.services import incident_sync


class IncidentUpdateInline(admin.StackedInline):
    model = IncidentUpdate
    extra = 1
    fields = ("status", "message", "created_at", "created_by")
    readonly_fields = ("created_by",)

    def get_formset(self, request, obj=None, **kwargs):
        formset = super().get_formset(request, obj, **kwargs)
        formset.form.base_fields["created_at"].initial = timezone.now
        return formset


@admin.register(Incident)
class IncidentAdmin(admin.ModelAdmin):
    list_display = ("title", "status", "started_at", "resolved_at")
    list_filter = ("status",)
    search_fields = ("title",)
    filter_horizontal = ("affected_models",)
    fields = ("title", "affected_models", "started_at", "status", "resolved_at")
    readonly_fields = ("status", "resolved_at")
    inlines = [IncidentUpdateInline]

    def get_changeform_initial_data(self, request):
        return {"started_at": timezone.now()}

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    def save_formset(self, request, form, formset, change):
        for update in formset.save(commit=False):
            if update.created_by_id is None:
                update.created_by = request.user
            update.save()
        for gone in formset.deleted_objects:
            gone.delete()

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        # The incident's status is its newest update's: the list, /status and the banner agree.
        incident_sync(incident=form.instance)


@admin.register(ModelHealth)
class ModelHealthAdmin(ReadOnlyAdmin):
    list_display = (
        "model",
        "bucket",
        "state",
        "requests",
        "upstream_errors",
        "timeouts",
        "ttfb_p50_ms",
        "routers_up",
        "routers",
    )
    list_filter = ("state", "model")
    date_hierarchy = "bucket"
    show_full_result_count = False


@admin.register(ModelDay)
class ModelDayAdmin(ReadOnlyAdmin):
    list_display = ("model", "day", "buckets", "degraded", "down")
    list_filter = ("model",)
    show_full_result_count = False
