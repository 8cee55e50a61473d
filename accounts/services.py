"""Writes on accounts: the use cases the admin (and anything else) calls."""

from __future__ import annotations

from django.db import transaction
from django.db.models import QuerySet

from accounts.models import Plan, User


def user_set_plan(*, users: QuerySet[User], plan: Plan | None) -> int:
    """Move users to `plan` (None: no plan, so the default plan applies). Returns how many.

    One UPDATE for the rows, then, after commit, the cached entries of their API keys are
    rewritten: those entries carry the plan id, and a bulk update sends no post_save.
    """
    from apikeys.services import apikeys_refresh_cache_for_owner

    with transaction.atomic():
        user_ids = list(users.values_list("pk", flat=True))
        updated = User.objects.filter(pk__in=user_ids).update(plan=plan)

        def refresh() -> None:
            for user_id in user_ids:
                apikeys_refresh_cache_for_owner(owner_id=user_id)

        transaction.on_commit(refresh)
    return updated
