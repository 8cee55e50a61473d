"""Writes on accounts: the use cases the admin (and anything else) calls."""

from __future__ import annotations

from django.db import transaction
from django.db.models import QuerySet

from accounts.models import Plan, User
from accounts.signals import users_bulk_changed
from audit.services import staff_actions_record


def _bulk_update(users: QuerySet[User], **fields) -> int:
    """One UPDATE for the rows, then, after commit, `users_bulk_changed`: caches built from
    these users (their API keys' entries carry the plan and the active flag) are rewritten,
    since a bulk update sends no post_save."""
    with transaction.atomic():
        user_ids = list(users.values_list("pk", flat=True))
        updated = User.objects.filter(pk__in=user_ids).update(**fields)
        transaction.on_commit(lambda: users_bulk_changed.send(sender=User, user_ids=user_ids))
    return updated


def user_set_plan(*, users: QuerySet[User], plan: Plan | None, actor=None) -> int:
    """Move users to `plan` (None: no plan, so the default plan applies). Returns how many.
    With an `actor` (staff), each user's move is on record, plan before → after."""
    with transaction.atomic():
        if actor is not None:
            after = {"plan": plan.name if plan else None}
            staff_actions_record(
                actor=actor,
                action="user.set_plan",
                changes=[
                    (u, {"plan": u.plan.name if u.plan else None}, after)
                    for u in users.select_related("plan")
                    if u.plan_id != (plan.pk if plan else None)
                ],
            )
        return _bulk_update(users, plan=plan)


def users_set_active(*, users: QuerySet[User], active: bool, actor=None) -> int:
    """Suspend (active=False) or reinstate users. A suspended user cannot log in, and their
    API keys answer 401 from the next request on, in every process. With an `actor` (staff),
    each change is on record."""
    with transaction.atomic():
        if actor is not None:
            staff_actions_record(
                actor=actor,
                action="user.reinstate" if active else "user.suspend",
                changes=[
                    (u, {"is_active": u.is_active}, {"is_active": active})
                    for u in users
                    if u.is_active != active
                ],
            )
        return _bulk_update(users, is_active=active)
