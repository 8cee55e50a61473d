"""Any change to plans, pools, routers or models moves the routing table's version stamp."""

from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save

from accounts.models import Plan
from catalog.models import CatalogModel, Router, RouterPool
from catalog.routing import bump_version


def _changed(sender, **kwargs):
    transaction.on_commit(bump_version)


for _model in (Plan, RouterPool, Router, CatalogModel):
    post_save.connect(_changed, sender=_model, dispatch_uid=f"catalog-save-{_model.__name__}")
    post_delete.connect(_changed, sender=_model, dispatch_uid=f"catalog-delete-{_model.__name__}")
m2m_changed.connect(_changed, sender=CatalogModel.plans.through, dispatch_uid="catalog-m2m-plans")
