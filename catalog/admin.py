"""The operator console: pools with their routers and live health, models with their pool."""

from django import forms
from django.contrib import admin, messages

from audit.admin_mixins import AuditedAdminMixin, AuditedInlineFormsetMixin
from audit.confirm import confirm_bulk
from audit.services import staff_action_record
from catalog.models import CatalogModel, Router, RouterPool
from catalog.router_client import breaker_state, router_probe
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


class RouterInline(BoundedIntegersAdminMixin, admin.TabularInline):
    model = Router
    form = RouterForm
    extra = 0
    fields = (
        "name",
        "base_url",
        "api_version",
        "session_id",
        "token",
        "weight",
        "enabled",
        "draining",
        "health",
        "last_check_at",
        "last_error",
    )
    readonly_fields = ("health", "last_check_at", "last_error")


ROUTER_AUDIT_FIELDS = (
    "pool", "name", "base_url", "api_version", "session_id", "weight", "enabled", "draining",
    "connect_timeout", "read_timeout",
)  # fmt: skip


@admin.register(RouterPool)
class RouterPoolAdmin(AuditedAdminMixin, AuditedInlineFormsetMixin, admin.ModelAdmin):
    audit_fields = ("name", "description")
    inline_audit_fields = {Router: ROUTER_AUDIT_FIELDS}
    inline_secret_fields = {Router: ("token",)}
    list_display = ("name", "description", "router_summary")
    search_fields = ("name",)
    inlines = [RouterInline]

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
    list_display = (
        "__str__",
        "pool",
        "base_url",
        "api_version",
        "session_id",
        "weight",
        "enabled",
        "draining",
        "health",
        "breaker",
        "last_check_at",
        "last_error",
    )
    list_filter = ("pool", "enabled", "draining", "health", "api_version")
    list_select_related = ("pool",)
    search_fields = ("name", "base_url")
    actions = ("enable", "disable", "drain", "probe_now")
    readonly_fields = ("health", "last_check_at", "last_error", "created_at", "updated_at")

    @admin.display(description="breaker (this process)")
    def breaker(self, router):
        return breaker_state(router.pk)

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
            rows=[(f"{r} (pool {r.pool})", router_state(r), _state_after(r, enabled, draining))
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
    )
    list_filter = ("enabled", "pool", "chat_template")
    list_editable = ("enabled", "sort_order")
    list_select_related = ("pool",)
    search_fields = ("public_id", "display_name")
    filter_horizontal = ("plans",)


def router_state(router: Router) -> str:
    """One word for what traffic a router takes: disabled, draining, or its probe's health."""
    if not router.enabled:
        return "disabled"
    if router.draining:
        return "draining"
    return router.get_health_display()


def _state_after(router: Router, enabled: bool | None, draining: bool | None) -> str:
    changed = Router(
        enabled=router.enabled if enabled is None else enabled,
        draining=router.draining if draining is None else draining,
        health=router.health,
    )
    return router_state(changed)
