"""The operator console for keys: find, inspect, revoke. Never shows a hash or a secret.

Keys are revoked here, never deleted: usage records and ledgers point at them, and the audit
trail keeps who revoked what. (Deleting a key's owner still takes their keys with them; the
cache forgets deleted keys after commit, see receivers.py.)

Adding a key here is disabled on purpose: the secret would have to travel back through a
message (stored in a cookie or the session) to be shown. Keys are made by their owner on
/keys, by POST /api/keys, or by `manage.py apikey_create`, which print the secret once.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.utils import timezone

from apikeys.authentication import client_ip
from apikeys.models import ApiKey, ApiKeyEvent
from apikeys.services import (
    BUDGET_FIELDS,
    EDITABLE_FIELDS,
    apikey_check_budgets,
    apikey_revoke,
    apikey_update,
)
from audit.confirm import confirm_bulk
from audit.services import staff_action_record
from core.bounds import BoundedIntegersAdminMixin
from core.errors import InvalidRequest

_EDITABLE = EDITABLE_FIELDS


class StatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [("active", "active"), ("expired", "expired"), ("revoked", "revoked")]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "active":
            return queryset.active()
        if self.value() == "expired":
            return queryset.filter(revoked_at__isnull=True, expires_at__lte=now)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


class ApiKeyEventInline(admin.TabularInline):
    model = ApiKeyEvent
    fields = ("created_at", "kind", "actor", "actor_label", "ip", "changes")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("-created_at",)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("actor")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class ApiKeyAdminForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = EDITABLE_FIELDS

    def clean(self):
        cleaned = super().clean()
        budgets = {name: cleaned.get(name) for name in BUDGET_FIELDS if name in cleaned}
        try:
            apikey_check_budgets(org=self.instance.org, budgets=budgets)
        except InvalidRequest as exc:
            self.add_error(exc.param if exc.param in self.fields else None, exc.message)
        return cleaned


@admin.register(ApiKey)
class ApiKeyAdmin(BoundedIntegersAdminMixin, admin.ModelAdmin):
    form = ApiKeyAdminForm
    list_display = ("display_prefix", "name", "org", "owner", "status_label", "created_at",
                    "last_used_at", "expires_at")  # fmt: skip
    list_filter = (StatusFilter, "created_at")
    search_fields = ("public_id", "owner__email", "name", "org__slug")
    list_select_related = ("owner", "org")
    raw_id_fields = ("owner",)
    filter_horizontal = ("allowed_models",)
    show_full_result_count = False
    actions = ("revoke_selected",)
    inlines = (ApiKeyEventInline,)
    fields = ("org", "owner", "display_prefix", "name", "expires_at", "allowed_models",
              "requests_per_minute", "tokens_per_minute", "requests_per_day", "tokens_per_day",
              "requests_per_month", "tokens_per_month", "created_at", "last_used_at",
              "rotated_at", "previous_valid_until", "revoked_at")  # fmt: skip
    readonly_fields = ("org", "owner", "display_prefix", "created_at", "last_used_at",
                       "rotated_at", "previous_valid_until", "revoked_at")  # fmt: skip
    # The hashes, their versions and the public id are not editable; a hash is never listed.
    exclude = ("secret_hash", "hash_version", "previous_secret_hash", "previous_hash_version")

    def lookup_allowed(self, lookup, value, request=None):
        # The organization page links here with ?org__id__exact=N (no filter sidebar: there
        # may be many organizations).
        return lookup == "org__id__exact" or super().lookup_allowed(lookup, value, request)

    @admin.display(description="key", ordering="public_id")
    def display_prefix(self, key: ApiKey) -> str:
        return key.display_prefix

    @admin.display(description="status")
    def status_label(self, key: ApiKey) -> str:
        return key.status

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        # Revoke instead (the "Revoke selected keys" action): this also removes "delete
        # selected" and the delete button.
        return False

    def save_model(self, request, obj, form, change):
        # Changes go through the service: one audit event, cache rewritten after commit.
        changes = {name: form.cleaned_data[name] for name in _EDITABLE
                   if name in form.changed_data}  # fmt: skip
        if changes:
            apikey_update(
                key=ApiKey.objects.get(pk=obj.pk),
                actor=request.user,
                actor_label="admin",
                ip=client_ip(request),
                **changes,
            )

    def save_related(self, request, form, formsets, change):
        # allowed_models were saved by apikey_update, so no form.save_m2m(); the event
        # inline is read-only, saving it only completes the admin's change message.
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_selected(self, request, queryset):
        live = queryset.filter(revoked_at__isnull=True).select_related("owner")
        return confirm_bulk(
            self,
            request,
            title="Revoke these API keys?",
            rows=[(f"{k} of {k.owner}", "active", "revoked: refused from the next request")
                  for k in live],
            run=lambda: self._revoke(request, live),
        )  # fmt: skip

    def _revoke(self, request, live):
        revoked = 0
        for key in live:
            apikey_revoke(key=key, actor=request.user, actor_label="admin", ip=client_ip(request))
            staff_action_record(
                actor=request.user,
                action="apikey.revoke",
                target=key,
                before={"status": "active"},
                after={"status": "revoked"},
            )
            revoked += 1
        self.message_user(request, f"Revoked {revoked} key(s).", messages.SUCCESS)


@admin.register(ApiKeyEvent)
class ApiKeyEventAdmin(admin.ModelAdmin):
    list_display = ("created_at", "kind", "key", "key_owner", "actor", "actor_label", "ip")
    list_filter = ("kind", "created_at")
    search_fields = ("key__public_id", "key__owner__email", "actor__email", "ip")
    list_select_related = ("key", "key__owner", "actor")
    show_full_result_count = False

    @admin.display(description="owner", ordering="key__owner__email")
    def key_owner(self, event: ApiKeyEvent):
        return event.key.owner

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_actions(self, request):
        # No bulk delete of the trail; deleting a user still cascades through it.
        return {}
