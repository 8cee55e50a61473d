"""Recording staff actions: one call per use case, from whichever app owns it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import models

from audit.models import StaffAction


def snapshot(obj: models.Model, fields: Iterable[str]) -> dict[str, Any]:
    """The named fields of `obj` as JSON-ready values (a foreign key as its object's str)."""
    found: dict[str, Any] = {}
    for name in fields:
        field = obj._meta.get_field(name)
        if field.is_relation:
            related = getattr(obj, name)
            found[name] = str(related) if related is not None else None
        else:
            value = getattr(obj, name)
            found[name] = (
                value if isinstance(value, bool | int | float | str | None) else str(value)
            )
    return found


def staff_action_record(
    *,
    actor: Any = None,
    action: str,
    target: models.Model | None = None,
    before: dict | None = None,
    after: dict | None = None,
    actor_label: str = "",
) -> StaffAction:
    """One entry: `actor` (a user, or None with `actor_label`) did `action` to `target`."""
    return StaffAction.objects.create(**_fields(actor, action, target, before, after, actor_label))


def staff_actions_record(
    *,
    actor: Any = None,
    action: str,
    changes: Iterable[tuple[models.Model, dict, dict]],
    actor_label: str = "",
) -> int:
    """A bulk action: one entry per (target, before, after), in one INSERT."""
    rows = [
        StaffAction(**_fields(actor, action, target, before, after, actor_label))
        for target, before, after in changes
    ]
    StaffAction.objects.bulk_create(rows)
    return len(rows)


def _fields(actor, action, target, before, after, actor_label) -> dict[str, Any]:
    is_user = actor is not None and getattr(actor, "is_authenticated", False)
    return {
        "actor": actor if is_user else None,
        "actor_label": actor_label,
        "action": action,
        "target_type": target._meta.label_lower if target is not None else "",
        "target_id": str(target.pk) if target is not None else "",
        "target_label": str(target)[:200] if target is not None else "",
        "before": before or {},
        "after": after or {},
    }
