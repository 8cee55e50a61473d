"""The operator console: pools with their routers and live health, models with their pool."""

from django import forms
from django.contrib import admin, messages
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from audit.admin_mixins import AuditedAdminMixin
from audit.confirm import confirm_bulk
from audit.services import staff_action_record
from catalog.models import CatalogModel, Router, RouterPool
from catalog.router_client import (
    breaker_state,
    router_figures,
    router_in_flight,
    router_probe,
)
from catalog.services import router_set_state
from core.bounds import BoundedIntegersAdminMixin


class RouterForm(forms.ModelForm):
    # The router key is write-only: never rendered back, kept when left empty.
    token = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Router key (Bearer token). Leave empty to keep the current one.",
    )

    class Meta:
        model = Router
        fields = (
            "pool",
            "name",
            "base_url",
            "api_version",
            "session_id",
            "token",
            "weight",
            "enabled",
            "draining",
            "connect_timeout",
            "read_timeout",
        )

    def clean_token(self):
        token = self.cleaned_data.get("token")
        if not token and self.instance.pk:
            return self.instance.token
        return token


class RouterInline(admin.TabularInline):
    """The pool page's routers as an operator reads them: state, last probe, the last five
    minutes' figures (every worker's, from the status rollup), requests in flight now (every
    worker's, or this process's without Redis), and the actions. Editing a router's address or
    key is on its own page."""

    model = Router
    extra = 0
    can_delete = False
    fields = ("router", "state", "weight", "last_probe", "live", "actions")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="router")
    def router(self, router):
        url = reverse("admin:catalog_router_change", args=[router.pk])
        return format_html('<a href="{}">{}</a><br><small>{}</small>', url, router,
                           router.base_url)  # fmt: skip

    @admin.display(description="state")
    def state(self, router):
        state = router.traffic_state
        level = "ok" if state == "healthy" else "error" if state == "unhealthy" else "warn"
        return format_html(
            '<span class="fleet-badge fleet-{}" data-state="{}">{}</span>', level, state, state
        )

    @admin.display(description="last probe")
    def last_probe(self, router):
        return _last_probe(router)

    @admin.display(description="last 5 min: requests, errors, p50; in flight now")
    def live(self, router):
        figures = router_figures().get(router.pk)
        if figures is None:
            text = "no traffic"
        else:
            p50 = f"{figures.latency_p50_ms} ms" if figures.latency_p50_ms is not None else "-"
            text = f"{figures.requests} req, {figures.errors} err, {p50}"
        in_flight = self._in_flight()
        if in_flight is None:
            return text
        where = " (this process only)" if in_flight.this_process_only else ""
        return format_html(
            '{}; <span data-in-flight="{}">{} in flight</span>{}',
            text, in_flight.of(router.pk), in_flight.of(router.pk), where,
        )  # fmt: skip

    def _in_flight(self):
        # Read once per page (one Redis round trip): the admin makes its inlines per request.
        if not hasattr(self, "_in_flight_now"):
            self._in_flight_now = router_in_flight()
        return self._in_flight_now

    @admin.display(description="actions")
    def actions(self, router):
        here = reverse("admin:catalog_routerpool_change", args=[router.pool_id])
        links = [
            (reverse("admin:ops_router_action", args=[router.pk, action]) + f"?next={here}",
             action, label)
            for action, label in (("enable", "Enable"), ("disable", "Disable"),
                                  ("drain", "Drain"), ("probe", "Probe"))
            if not (action == "enable" and router.enabled and not router.draining)
            and not (action == "disable" and not router.enabled)
            and not (action == "drain" and (router.draining or not router.enabled))
        ]  # fmt: skip
        links.append((reverse("admin:ops_router_try", args=[router.pk]), "try", "Try"))
        return format_html_join(" ", '<a class="button" href="{}" data-action="{}">{}</a>', links)


ROUTER_AUDIT_FIELDS = (
    "pool", "name", "base_url", "api_version", "session_id", "weight", "enabled", "draining",
    "connect_timeout", "read_timeout",
)  # fmt: skip


def _last_probe(router) -> str:
    if router.last_check_at is None:
        return "never"
    when = timezone.localtime(router.last_check_at).strftime("%H:%M:%S")
    return f"{when}: {router.last_error[:60]}" if router.last_error else f"{when}: ok"


@admin.register(RouterPool)
class RouterPoolAdmin(AuditedAdminMixin, admin.ModelAdmin):
    audit_fields = ("name", "description")
    list_display = ("name", "description", "router_summary")
    search_fields = ("name",)
    inlines = [RouterInline]
    readonly_fields = ("traffic",)

    class Media:
        css = {"all": ("css/admin-ops.css",)}

    @admin.display(description="traffic")
    def traffic(self, pool):
        if not pool.pk:
            return "Add routers from the router page once the pool exists."
        weights = reverse("admin:ops_pool_weights", args=[pool.pk])
        add = reverse("admin:catalog_router_add") + f"?pool={pool.pk}"
        return format_html(
            '<a class="button" href="{}" id="change-weights">Change weights</a> '
            '<a class="button" href="{}">Add a router</a>',
            weights, add,
        )  # fmt: skip

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("routers")

    @admin.display(description="routers (healthy / enabled / all)")
    def router_summary(self, pool):
        routers = list(pool.routers.all())
        healthy = sum(1 for r in routers if r.enabled and r.health == Router.Health.HEALTHY)
        enabled = sum(1 for r in routers if r.enabled)
        return f"{healthy} / {enabled} / {len(routers)}"


@admin.register(Router)
class RouterAdmin(AuditedAdminMixin, BoundedIntegersAdminMixin, admin.ModelAdmin):
    audit_fields = ROUTER_AUDIT_FIELDS
    audit_secret_fields = ("token",)
    form = RouterForm
    # Narrow enough for 1280 px: state folds enabled, draining and health; last probe folds
    # its time and error; the version and session are on the router's page.
    list_display = ("__str__", "pool", "base_url", "weight", "state", "breaker", "last_probe")
    list_filter = ("pool", "enabled", "draining", "health", "api_version")
    list_select_related = ("pool",)
    search_fields = ("name", "base_url")
    actions = ("enable", "disable", "drain", "probe_now")
    readonly_fields = ("health", "last_check_at", "last_error", "created_at", "updated_at")

    @admin.display(description="breaker (this process)")
    def breaker(self, router):
        return breaker_state(router.pk)

    @admin.display(description="state", ordering="health")
    def state(self, router):
        return router.traffic_state

    @admin.display(description="last probe", ordering="last_check_at")
    def last_probe(self, router):
        return _last_probe(router)

    def _state_action(self, request, queryset, *, verb: str, enabled=None, draining=None):
        after = {"enabled": enabled, "draining": draining}
        changing = [
            r for r in queryset
            if any(v is not None and getattr(r, k) != v for k, v in after.items())
        ]  # fmt: skip

        def run():
            for router in changing:
                router_set_state(
                    router=router, enabled=enabled, draining=draining, actor=request.user,
                    action=f"router.{verb}",
                )  # fmt: skip
            self.message_user(request, f"{verb.capitalize()}: {len(changing)} router(s).")

        return confirm_bulk(
            self, request, title=f"{verb.capitalize()} these routers?", run=run,
            rows=[(f"{r} (pool {r.pool})", r.traffic_state, _state_after(r, enabled, draining))
                  for r in changing],
            note="Disabled and draining routers take no new requests; open ones finish.",
        )  # fmt: skip

    @admin.action(description="Enable selected routers")
    def enable(self, request, queryset):
        return self._state_action(request, queryset, verb="enable", enabled=True, draining=False)

    @admin.action(description="Disable selected routers")
    def disable(self, request, queryset):
        return self._state_action(request, queryset, verb="disable", enabled=False)

    @admin.action(description="Drain selected routers (finish open requests, take no new ones)")
    def drain(self, request, queryset):
        return self._state_action(request, queryset, verb="drain", draining=True)

    @admin.action(description="Probe selected routers now")
    def probe_now(self, request, queryset):
        for router in queryset:
            before = router.health
            router = router_probe(router=router)
            staff_action_record(
                actor=request.user,
                action="router.probe",
                target=router,
                before={"health": before},
                after={"health": router.health, "error": router.last_error},
            )
            level = messages.SUCCESS if router.health == Router.Health.HEALTHY else messages.WARNING
            self.message_user(
                request,
                f"{router}: {router.get_health_display()}"
                + (f" ({router.last_error})" if router.last_error else ""),
                level,
            )


@admin.register(CatalogModel)
class CatalogModelAdmin(AuditedAdminMixin, BoundedIntegersAdminMixin, admin.ModelAdmin):
    audit_fields = (
        "public_id", "display_name", "pool", "enabled", "context_length", "max_tokens",
        "default_max_tokens", "request_timeout", "chat_template", "sort_order",
    )  # fmt: skip
    list_display = (
        "public_id",
        "display_name",
        "pool",
        "enabled",
        "context_length",
        "max_tokens",
        "chat_template",
        "sort_order",
        "try_it",
    )
    readonly_fields = ("try_it",)
    list_filter = ("enabled", "pool", "chat_template")
    list_editable = ("enabled", "sort_order")
    list_select_related = ("pool",)
    search_fields = ("public_id", "display_name")
    filter_horizontal = ("plans",)

    @admin.display(description="try")
    def try_it(self, model):
        if not model.pk:
            return "-"
        url = reverse("admin:ops_model_try", args=[model.pk])
        return format_html('<a href="{}" data-try-model="{}">Try this model</a>', url, model.pk)


def _state_after(router: Router, enabled: bool | None, draining: bool | None) -> str:
    changed = Router(
        enabled=router.enabled if enabled is None else enabled,
        draining=router.draining if draining is None else draining,
        health=router.health,
    )
    return changed.traffic_state
