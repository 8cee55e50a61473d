"""The operator's pages behind the pool page's buttons: a router's state change (confirmed),
a pool's weights (with each router's resulting share), and "try this model / router".

Registered on the admin site by portal/admin_site.py (staff only, CSRF-checked, MFA as the
rest of the admin). Every change goes through the catalog's services, so it is on record.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods

from audit.services import staff_action_record
from catalog.models import CatalogModel, Router, RouterPool
from catalog.router_client import router_probe
from catalog.services import router_set_state
from ops.fleet import fleet_cache_clear
from ops.trial import DEFAULT_PROMPT, model_try, router_try

# action -> (enabled, draining, words)
ROUTER_ACTIONS = {
    "enable": (True, False, "Enable"),
    "disable": (False, None, "Disable"),
    "drain": (None, True, "Drain"),
    "probe": (None, None, "Probe"),
}


def _require(request, permission: str) -> None:
    """Staff pass the admin's own check; these pages also need the model permission."""
    if not request.user.has_perm(permission):
        raise PermissionDenied


def _back(request, default: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return target
    return default


def shares(
    routers: list[Router],
    *,
    weights: dict[int, int] | None = None,
    states: dict[int, tuple[bool, bool]] | None = None,
) -> dict[int, float]:
    """Each router's share of its pool's new requests: its weight over the weights of the
    routers that take traffic (enabled, not draining, not unhealthy); 0 for the others.
    `weights` and `states` ((enabled, draining) by router id) override the routers' own."""
    weights = weights or {}
    states = states or {}

    def takes(r: Router) -> bool:
        enabled, draining = states.get(r.pk, (r.enabled, r.draining))
        return enabled and not draining and r.health != Router.Health.UNHEALTHY

    weight = {r.pk: max(1, weights.get(r.pk, r.weight)) for r in routers}
    total = sum(weight[r.pk] for r in routers if takes(r))
    return {r.pk: weight[r.pk] / total if takes(r) else 0.0 for r in routers}


@require_http_methods(["GET", "POST"])
def router_action(request, pk: int, action: str, *, admin_site):
    _require(request, "catalog.change_router")
    if action not in ROUTER_ACTIONS:
        raise Http404("No such router action.")
    router = get_object_or_404(Router.objects.select_related("pool"), pk=pk)
    enabled, draining, words = ROUTER_ACTIONS[action]
    back = _back(request, reverse("admin:catalog_routerpool_change", args=[router.pool_id]))
    if request.method == "POST":
        if action == "probe":
            before = router.health
            router = router_probe(router=router)
            staff_action_record(
                actor=request.user, action="router.probe", target=router,
                before={"health": before},
                after={"health": router.health, "error": router.last_error},
            )  # fmt: skip
            level = messages.SUCCESS if router.health == Router.Health.HEALTHY else messages.WARNING
            messages.add_message(
                request, level,
                f"Probed {router}: {router.get_health_display()}"
                + (f" ({router.last_error})" if router.last_error else ""),
            )  # fmt: skip
        else:
            router_set_state(
                router=router, enabled=enabled, draining=draining, actor=request.user,
                action=f"router.{action}",
            )  # fmt: skip
            messages.success(request, f"{words}: {router} is now {router.traffic_state}.")
        fleet_cache_clear()
        return HttpResponseRedirect(back)
    after = Router(
        enabled=router.enabled if enabled is None else enabled,
        draining=router.draining if draining is None else draining,
        health=router.health,
    )
    pool_routers = list(router.pool.routers.order_by("id"))
    now_shares = shares(pool_routers)
    new_shares = shares(pool_routers, states={router.pk: (after.enabled, after.draining)})
    rows = [(r, f"{now_shares[r.pk]:.0%}", f"{new_shares[r.pk]:.0%}") for r in pool_routers]
    return TemplateResponse(
        request,
        "admin/ops/router_action.html",
        {
            **admin_site.each_context(request),
            "title": f"{words} router {router}?",
            "router": router,
            "action": action,
            "words": words,
            "before": router.traffic_state,
            "after": after.traffic_state if action != "probe" else "",
            "rows": rows if action != "probe" else [],
            "next": back,
        },
    )


class WeightsForm(forms.Form):
    def __init__(self, *args, routers: list[Router], **kwargs):
        super().__init__(*args, **kwargs)
        self.routers = routers
        for r in routers:
            self.fields[f"w{r.pk}"] = forms.IntegerField(
                label=str(r), min_value=1, max_value=1000, initial=r.weight
            )

    def weights(self) -> dict[int, int]:
        return {r.pk: self.cleaned_data[f"w{r.pk}"] for r in self.routers}


@require_http_methods(["GET", "POST"])
def pool_weights(request, pk: int, *, admin_site):
    _require(request, "catalog.change_router")
    pool = get_object_or_404(RouterPool, pk=pk)
    routers = list(pool.routers.order_by("id"))
    form = WeightsForm(request.POST or None, routers=routers)
    preview = None
    if request.method == "POST" and form.is_valid():
        weights = form.weights()
        if request.POST.get("confirmed") == "yes":
            with transaction.atomic():
                for r in routers:
                    if r.weight != weights[r.pk]:
                        staff_action_record(
                            actor=request.user, action="router.weight", target=r,
                            before={"weight": r.weight}, after={"weight": weights[r.pk]},
                        )  # fmt: skip
                        r.weight = weights[r.pk]
                        r.save(update_fields=["weight", "updated_at"])
            fleet_cache_clear()
            messages.success(request, f"Weights of pool {pool} applied.")
            return HttpResponseRedirect(reverse("admin:catalog_routerpool_change", args=[pool.pk]))
        now, then = shares(routers), shares(routers, weights=weights)
        preview = [
            (r, r.weight, weights[r.pk], f"{now[r.pk]:.0%}", f"{then[r.pk]:.0%}", r.traffic_state)
            for r in routers
        ]
    return TemplateResponse(
        request,
        "admin/ops/pool_weights.html",
        {
            **admin_site.each_context(request),
            "title": f"Weights of pool {pool}",
            "pool": pool,
            "form": form,
            "preview": preview,
        },
    )


class TryForm(forms.Form):
    prompt = forms.CharField(max_length=2000, initial=DEFAULT_PROMPT, widget=forms.Textarea(
        attrs={"rows": 3, "cols": 60}))  # fmt: skip


class RouterTryForm(TryForm):
    model = forms.ModelChoiceField(queryset=CatalogModel.objects.none(), empty_label=None)


@require_http_methods(["GET", "POST"])
def model_try_view(request, pk: int, *, admin_site):
    _require(request, "catalog.view_catalogmodel")
    model = get_object_or_404(CatalogModel, pk=pk)
    form = TryForm(request.POST or None)
    result = None
    if request.method == "POST" and form.is_valid():
        result = model_try(staff=request.user, model=model, prompt=form.cleaned_data["prompt"])
        staff_action_record(
            actor=request.user, action="model.try", target=model,
            after={"router": result.router, "ok": result.ok, "request_id": result.request_id},
        )  # fmt: skip
    return TemplateResponse(
        request,
        "admin/ops/try.html",
        {
            **admin_site.each_context(request),
            "title": f"Try model {model}",
            "subject": model,
            "form": form,
            "result": result,
            "through": "the whole /v1/ pipeline, as your own internal key (metered as yours)",
        },
    )


@require_http_methods(["GET", "POST"])
def router_try_view(request, pk: int, *, admin_site):
    _require(request, "catalog.view_router")
    router = get_object_or_404(Router.objects.select_related("pool"), pk=pk)
    form = RouterTryForm(request.POST or None)
    form.fields["model"].queryset = CatalogModel.objects.filter(pool=router.pool_id, enabled=True)
    result = None
    if request.method == "POST" and form.is_valid():
        result = router_try(
            router=router, model=form.cleaned_data["model"], prompt=form.cleaned_data["prompt"]
        )
        staff_action_record(
            actor=request.user, action="router.try", target=router,
            after={"ok": result.ok, "error": result.error},
        )  # fmt: skip
    return TemplateResponse(
        request,
        "admin/ops/try.html",
        {
            **admin_site.each_context(request),
            "title": f"Try router {router}",
            "subject": router,
            "form": form,
            "result": result,
            "through": f"this router only ({router.traffic_state}), outside the routing table; "
            "not metered",
        },
    )
