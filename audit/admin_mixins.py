"""Admin mixins that put every save and delete of an audited model on record."""

from __future__ import annotations

from audit.services import snapshot, staff_action_record, staff_actions_record


def _diff(before: dict, after: dict) -> tuple[dict, dict]:
    changed = [k for k in after if before.get(k) != after.get(k)]
    return {k: before.get(k) for k in changed}, {k: after[k] for k in changed}


class AuditedAdminMixin:
    """Records `<model>.create`, `<model>.change` (only the fields that changed, before →
    after) and `<model>.delete` for the fields in `audit_fields`; a field in
    `audit_secret_fields` is recorded as "changed", never its value."""

    audit_fields: tuple[str, ...] = ()
    audit_secret_fields: tuple[str, ...] = ()

    def _audit_name(self, obj) -> str:
        return obj._meta.model_name

    def _audit_snapshot(self, obj) -> dict:
        return snapshot(obj, self.audit_fields)

    def _audit_secrets_changed(self, previous, obj) -> list[str]:
        return [
            name
            for name in self.audit_secret_fields
            if previous is not None and getattr(previous, name) != getattr(obj, name)
        ]

    def save_model(self, request, obj, form, change):
        # The form has already written its values onto `obj`: "before" comes from the database.
        previous = type(obj).objects.filter(pk=obj.pk).first() if change else None
        super().save_model(request, obj, form, change)
        before = self._audit_snapshot(previous) if previous is not None else {}
        after = self._audit_snapshot(obj)
        before, after = _diff(before, after)
        for name in self._audit_secrets_changed(previous, obj):
            before[name], after[name] = "…", "changed"
        if after or not change:
            staff_action_record(
                actor=request.user,
                action=f"{self._audit_name(obj)}.{'change' if change else 'create'}",
                target=obj,
                before=before,
                after=after,
            )

    def delete_model(self, request, obj):
        before = self._audit_snapshot(obj)
        staff_action_record(
            actor=request.user, action=f"{self._audit_name(obj)}.delete", target=obj, before=before
        )
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        staff_actions_record(
            actor=request.user,
            action=f"{queryset.model._meta.model_name}.delete",
            changes=[(obj, self._audit_snapshot(obj), {}) for obj in queryset],
        )
        super().delete_queryset(request, queryset)
