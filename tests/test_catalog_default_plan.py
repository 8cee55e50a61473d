"""The routing table's default plan: the one marked default, else the one named DEFAULT_PLAN."""

from __future__ import annotations

import pytest

from accounts.models import Plan
from catalog.routing import build_routing_table


@pytest.mark.django_db
def test_a_plan_named_like_the_default_is_the_default_when_none_is_marked(settings):
    settings.DEFAULT_PLAN_NAME = "free"
    Plan.objects.update(is_default=False)
    free = Plan.objects.create(name="free", is_default=False)
    Plan.objects.create(name="pro", is_default=False)
    assert build_routing_table("v").default_plan_id == free.pk


@pytest.mark.django_db
def test_the_plan_marked_default_wins_over_the_name():
    Plan.objects.update(is_default=False)
    Plan.objects.create(name="free", is_default=False)
    pro = Plan.objects.create(name="pro", is_default=True)
    assert build_routing_table("v").default_plan_id == pro.pk
