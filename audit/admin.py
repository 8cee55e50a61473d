"""The staff action log: read-only, filterable, never deleted from here."""

from django.contrib import admin
from django.utils.html import format_html_join

from audit.models import StaffAction


@admin.register(StaffAction)
class StaffActionAdmin(admin.ModelAdmin):
    list_display = ("created_at", "who", "action", "target_label", "change")
    list_filter = ("action", "target_type", "created_at")
    search_fields = ("actor__email", "actor_label", "target_label", "action")
    list_select_related = ("actor",)
    date_hierarchy = "created_at"
    show_full_result_count = False

    class Media:
        css = {"all": ("css/admin-ops.css",)}

    readonly_fields = (
        "created_at", "actor", "actor_label", "action", "target_type", "target_id",
        "target_label", "before", "after",
    )  # fmt: skip

    @admin.display(description="who", ordering="actor__email")
    def who(self, entry: StaffAction) -> str:
        return entry.who

    @admin.display(description="before → after")
    def change(self, entry: StaffAction):
        keys = sorted(set(entry.before) | set(entry.after))
        return format_html_join(
            "; ",
            "{}: {} → {}",
            ((k, _show(entry.before.get(k)), _show(entry.after.get(k))) for k in keys),
        )

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def _show(value) -> str:
    return "—" if value is None else str(value)
