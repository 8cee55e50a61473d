"""The routing table: models, pools, routers and plans, held in each process's memory.

The hot path reads only this. Staff changes bump a version stamp in the shared cache (after
commit); each process compares its copy's stamp at most every CATALOG_CHECK_SECONDS and
rebuilds from the database when it moved. So a request makes no database query for routing.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

from django.conf import settings
from django.core.cache import cache

from accounts.models import Plan
from catalog.models import CatalogModel, Router
from core.db import release_connection

VERSION_KEY = "catalog:version"


@dataclass(frozen=True, slots=True)
class RouterInfo:
    id: int
    pool_id: int
    base_url: str
    api_version: str
    session_id: int
    token: str
    weight: int
    connect_timeout: float
    read_timeout: float | None
    health: str


@dataclass(frozen=True, slots=True)
class ModelInfo:
    public_id: str
    display_name: str
    description: str
    pool_id: int
    pool_name: str
    context_length: int
    chat_template: str
    default_max_tokens: int | None  # None: what fits the context (inference.services)
    max_tokens: int
    request_timeout: int
    plan_ids: frozenset[int]
    created: int


@dataclass(frozen=True, slots=True)
class PlanInfo:
    id: int
    name: str
    requests_per_minute: int | None
    tokens_per_minute: int | None
    requests_per_day: int | None
    tokens_per_day: int | None
    requests_per_month: int | None
    tokens_per_month: int | None
    max_concurrent_requests: int | None
    all_models: bool


@dataclass(slots=True)
class RoutingTable:
    version: str | None
    models: dict[str, ModelInfo] = field(default_factory=dict)  # enabled models only
    routers: dict[int, list[RouterInfo]] = field(default_factory=dict)  # pool id -> usable
    plans: dict[int, PlanInfo] = field(default_factory=dict)
    default_plan_id: int | None = None

    def plan_for(self, plan_id: int | None) -> PlanInfo | None:
        if plan_id is not None and plan_id in self.plans:
            return self.plans[plan_id]
        return self.plans.get(self.default_plan_id) if self.default_plan_id else None

    def model_allowed(
        self, model: ModelInfo, plan: PlanInfo | None, key_models: frozenset[str] | None
    ) -> bool:
        if key_models is not None and model.public_id not in key_models:
            return False
        if plan is None:
            return False
        return plan.all_models or plan.id in model.plan_ids


_lock = threading.Lock()
_table: RoutingTable | None = None
_checked_at = 0.0


def routing_table() -> RoutingTable:
    global _table, _checked_at
    now = time.monotonic()
    table = _table
    if table is not None and now - _checked_at < settings.CATALOG_CHECK_SECONDS:
        return table
    try:
        version = cache.get(VERSION_KEY)
    except Exception:
        if table is not None:
            _checked_at = now
            return table
        return build_routing_table(None)
    if table is not None and version is not None and version == table.version:
        _checked_at = now
        return table
    with _lock:
        if version is None:
            version = uuid.uuid4().hex
            try:
                if not cache.add(VERSION_KEY, version, None):
                    version = cache.get(VERSION_KEY)
            except Exception:
                version = None
        _table = build_routing_table(version)
        _checked_at = now
        release_connection()
        return _table


def bump_version() -> None:
    """Tell every process that the catalog changed (call after commit)."""
    global _checked_at
    _checked_at = 0.0
    try:
        cache.set(VERSION_KEY, uuid.uuid4().hex, None)
    except Exception:
        import logging

        logging.getLogger(__name__).warning("catalog version not bumped: cache unavailable")


def build_routing_table(version: str | None) -> RoutingTable:
    table = RoutingTable(version=version)
    for plan in Plan.objects.all():
        table.plans[plan.pk] = PlanInfo(
            id=plan.pk,
            name=plan.name,
            all_models=plan.all_models,
            **{name: getattr(plan, name) for name in Plan.LIMIT_FIELDS},
        )
        if plan.is_default:
            table.default_plan_id = plan.pk
    if table.default_plan_id is None:
        for info in table.plans.values():
            if info.name == settings.DEFAULT_PLAN_NAME:
                table.default_plan_id = info.id
    for model in (
        CatalogModel.objects.filter(enabled=True).select_related("pool").prefetch_related("plans")
    ):
        table.models[model.public_id] = ModelInfo(
            public_id=model.public_id,
            display_name=model.display_name or model.public_id,
            description=model.description,
            pool_id=model.pool_id,
            pool_name=model.pool.name,
            context_length=model.context_length,
            chat_template=model.chat_template,
            default_max_tokens=model.default_max_tokens,
            max_tokens=model.max_tokens,
            request_timeout=model.request_timeout,
            plan_ids=frozenset(p.pk for p in model.plans.all()),
            created=int(model.created_at.timestamp()),
        )
    for router in Router.objects.filter(enabled=True, draining=False).order_by("id"):
        table.routers.setdefault(router.pool_id, []).append(router_info(router))
    return table


def router_info(router: Router) -> RouterInfo:
    """What the request path needs of a router (also for trying one outside the table)."""
    return RouterInfo(
        id=router.pk,
        pool_id=router.pool_id,
        base_url=router.base_url.rstrip("/"),
        api_version=router.api_version,
        session_id=router.session_id,
        token=router.token,
        weight=max(1, router.weight),
        connect_timeout=router.connect_timeout,
        read_timeout=router.read_timeout,
        health=router.health,
    )
