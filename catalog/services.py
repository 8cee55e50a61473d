"""Catalog use cases: apply a whole configuration file, change a router's state, probe it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import models, transaction
from django.utils import timezone

from accounts.models import Plan
from audit.services import staff_action_record
from catalog.models import CatalogModel, Router, RouterPool
from catalog.routerurl import router_url_problem
from core.bounds import column_range

log = logging.getLogger(__name__)


class ConfigInvalid(Exception):
    """A configuration file is wrong; the message names the field."""


@dataclass
class ApplyResult:
    plans: int = 0
    pools: int = 0
    routers: int = 0
    models: int = 0

    def __str__(self) -> str:
        return (
            f"{self.plans} plans, {self.pools} pools, {self.routers} routers, "
            f"{self.models} models applied"
        )


_PLAN_LIMITS = Plan.LIMIT_FIELDS


def _obj(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigInvalid(f"{where}: expected an object")
    return value


def _list(value, where: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigInvalid(f"{where}: expected a list")
    return value


def _str(data: dict, name: str, where: str, *, required: bool = True, default: str = "") -> str:
    value = data.get(name)
    if value is None:
        if required:
            raise ConfigInvalid(f"{where}.{name}: required")
        return default
    if not isinstance(value, str) or not value.strip():
        raise ConfigInvalid(f"{where}.{name}: expected a non-empty string")
    return value.strip()


def _int(
    data: dict,
    name: str,
    where: str,
    *,
    model: type[models.Model],
    default=None,
    nullable: bool = False,
    minimum: int = 0,
):
    """An integer field of `model` (same name), from `minimum` to what its column holds."""
    if name not in data:
        return default
    value = data[name]
    if value is None and nullable:
        return None
    low, high = column_range(model, name)
    minimum = max(minimum, low)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= high:
        raise ConfigInvalid(
            f"{where}.{name}: expected an integer from {minimum} to {high}"
            + (" or null" if nullable else "")
        )
    return value


def _bool(data: dict, name: str, where: str, default: bool) -> bool:
    value = data.get(name, default)
    if not isinstance(value, bool):
        raise ConfigInvalid(f"{where}.{name}: expected true or false")
    return value


_UNSET = object()


@transaction.atomic
def catalog_apply_config(*, config) -> ApplyResult:
    """Upsert plans, pools, routers and models from one document; all or nothing."""
    config = _obj(config, "config")
    unknown = set(config) - {"plans", "pools", "models"}
    if unknown:
        raise ConfigInvalid(f"config: unknown section(s) {', '.join(sorted(unknown))}")
    result = ApplyResult()
    # A plan names its models before the models section has created them: linked at the end.
    plan_models: dict[str, list[str]] = {}
    for i, raw in enumerate(_list(config.get("plans"), "plans")):
        name, model_ids = _apply_plan(raw, f"plans[{i}]")
        plan_models[name] = model_ids
        result.plans += 1
    for i, raw in enumerate(_list(config.get("pools"), "pools")):
        result.routers += _apply_pool(raw, f"pools[{i}]")
        result.pools += 1
    for i, raw in enumerate(_list(config.get("models"), "models")):
        _apply_model(raw, f"models[{i}]")
        result.models += 1
    for plan_name, model_ids in plan_models.items():
        _link_plan_models(plan_name, model_ids)
    return result


def _apply_plan(raw, where: str) -> tuple[str, list[str]]:
    """Upsert one plan; returns its name and the model ids it lists ("*" taken out)."""
    data = _obj(raw, where)
    name = _str(data, "name", where)
    fields = {
        f: _int(data, f, where, model=Plan, default=_UNSET, nullable=True) for f in _PLAN_LIMITS
    }
    fields = {k: v for k, v in fields.items() if v is not _UNSET}
    models = _list(data.get("models", ["*"]), f"{where}.models")
    if not all(isinstance(m, str) for m in models):
        raise ConfigInvalid(f'{where}.models: expected a list of model ids or ["*"]')
    fields["all_models"] = "*" in models
    if "description" in data:
        fields["description"] = _str(data, "description", where, required=False)
    if _bool(data, "default", where, False):
        Plan.objects.exclude(name=name).update(is_default=False)
        fields["is_default"] = True
    Plan.objects.update_or_create(name=name, defaults=fields)
    return name, [m for m in models if m != "*"]


def _apply_pool(raw, where: str) -> int:
    """Upsert one pool and its routers; returns how many routers."""
    data = _obj(raw, where)
    name = _str(data, "name", where)
    pool, _ = RouterPool.objects.update_or_create(
        name=name, defaults={"description": data.get("description") or ""}
    )
    routers = _list(data.get("routers"), f"{where}.routers")
    for j, raw_router in enumerate(routers):
        _apply_router(pool, raw_router, f"{where}.routers[{j}]")
    return len(routers)


def _apply_router(pool: RouterPool, raw, where: str) -> None:
    data = _obj(raw, where)
    url = _str(data, "url", where).rstrip("/")
    problem = router_url_problem(url)
    if problem:
        raise ConfigInvalid(f"{where}.url: {problem}")
    version = data.get("api_version", "v1")
    if version not in Router.ApiVersion.values:
        raise ConfigInvalid(f"{where}.api_version: expected one of v1, v3")
    session_id = _int(data, "session_id", where, model=Router)
    if session_id is None:
        raise ConfigInvalid(f"{where}.session_id: required")
    defaults = {
        "api_version": version,
        "weight": _int(data, "weight", where, model=Router, default=1, minimum=1),
        "enabled": _bool(data, "enabled", where, True),
    }
    if "token" in data:
        defaults["token"] = _str(data, "token", where, required=False)
    if "name" in data:
        defaults["name"] = _str(data, "name", where, required=False)
    Router.objects.update_or_create(
        pool=pool, base_url=url, session_id=session_id, defaults=defaults
    )


_MODEL_INTEGERS = ("max_tokens", "default_max_tokens", "context_length", "request_timeout")


def _apply_model(raw, where: str) -> None:
    data = _obj(raw, where)
    public_id = _str(data, "id", where)
    pool_name = _str(data, "pool", where)
    pool = RouterPool.objects.filter(name=pool_name).first()
    if pool is None:
        raise ConfigInvalid(f"{where}.pool: no pool named '{pool_name}'")
    template = data.get("chat_template", "llama3")
    if template not in CatalogModel.ChatTemplate.values:
        raise ConfigInvalid(
            f"{where}.chat_template: expected one of {', '.join(CatalogModel.ChatTemplate.values)}"
        )
    defaults = {
        "pool": pool,
        "chat_template": template,
        "enabled": _bool(data, "enabled", where, True),
    }
    for name in (*_MODEL_INTEGERS, "sort_order"):
        minimum = -(10**6) if name == "sort_order" else 1
        nullable = name == "default_max_tokens"  # null: what fits the context, up to max_tokens
        value = _int(data, name, where, model=CatalogModel, minimum=minimum, nullable=nullable)
        if value is not None or (nullable and name in data):
            defaults[name] = value
    for text in ("display_name", "description"):
        if text in data:
            defaults[text] = _str(data, text, where, required=False)
    model, _ = CatalogModel.objects.update_or_create(public_id=public_id, defaults=defaults)
    if model.default_max_tokens is not None and model.default_max_tokens > model.max_tokens:
        model.default_max_tokens = model.max_tokens
        model.save(update_fields=["default_max_tokens"])


def _link_plan_models(plan_name: str, model_ids: list[str]) -> None:
    plan = Plan.objects.get(name=plan_name)
    models = list(CatalogModel.objects.filter(public_id__in=model_ids))
    missing = set(model_ids) - {m.public_id for m in models}
    if missing:
        raise ConfigInvalid(
            f"plans[{plan_name}].models: unknown model(s) {', '.join(sorted(missing))}"
        )
    plan.models.set(models)


def router_set_state(
    *,
    router: Router,
    enabled: bool | None = None,
    draining: bool | None = None,
    actor=None,
    action: str = "router.set_state",
) -> Router:
    """Enable, disable, drain or undrain a router; with an `actor` (staff), on record."""
    before = {"enabled": router.enabled, "draining": router.draining}
    if enabled is not None:
        router.enabled = enabled
    if draining is not None:
        router.draining = draining
    with transaction.atomic():
        router.save(update_fields=["enabled", "draining", "updated_at"])
        after = {"enabled": router.enabled, "draining": router.draining}
        if actor is not None and after != before:
            changed = [k for k in after if after[k] != before[k]]
            staff_action_record(
                actor=actor,
                action=action,
                target=router,
                before={k: before[k] for k in changed},
                after={k: after[k] for k in changed},
            )
    return router


def router_record_health(*, router: Router, error: str) -> Router:
    """Record a probe's result: healthy when `error` is empty (inference's probe calls this)."""
    health = Router.Health.UNHEALTHY if error else Router.Health.HEALTHY
    changed = health != router.health
    router.health, router.last_error, router.last_check_at = health, error, timezone.now()
    if changed:
        router.save(update_fields=["health", "last_error", "last_check_at", "updated_at"])
    else:
        # No routing change: skip the signal so the catalog version is not bumped every probe.
        Router.objects.filter(pk=router.pk).update(
            last_error=error, last_check_at=router.last_check_at
        )
    if error:
        log.warning("router probe failed", extra={"router_id": router.pk, "reason": error})
    return router
