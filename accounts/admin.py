"""The operator console for customers and plans.

The change lists stay at a fixed number of queries however many rows they show: organizations
come with their plan in one join, plans with their organization count in one aggregate.
"""

from __future__ import annotations

from django import forms
from django.apps import apps
from django.contrib import admin, messages
from django.contrib.admin.widgets import FilteredSelectMultiple
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.db.models import Count
from django.urls import reverse
from django.utils.html import format_html

from accounts.models import Membership, Organization, Plan, User
from accounts.services import org_set_plan, orgs_set_suspended, users_set_active
from audit.admin_mixins import AuditedAdminMixin
from audit.confirm import confirm_bulk
from core.bounds import BoundedIntegersAdminMixin

UNLIMITED_HELP = "Empty = unlimited."
LIMIT_HELP = {
    "requests_per_minute": "Requests per minute, per customer. " + UNLIMITED_HELP,
    "tokens_per_minute": "Prompt + completion tokens per minute. " + UNLIMITED_HELP,
    "requests_per_day": "Requests per UTC day. " + UNLIMITED_HELP,
    "tokens_per_day": "Tokens per UTC day. " + UNLIMITED_HELP,
    "requests_per_month": "Requests per calendar month (UTC). " + UNLIMITED_HELP,
    "tokens_per_month": "Tokens per calendar month (UTC). " + UNLIMITED_HELP,
    "max_concurrent_requests": "Requests in flight at once (open streams count). " + UNLIMITED_HELP,
}


# --- users ------------------------------------------------------------------------------------


class UserCreationAdminForm(AdminUserCreationForm):
    class Meta:
        model = User
        fields = ("email",)

    def clean_email(self) -> str:
        # The manager stores emails lower-cased; the admin must not create a case twin.
        email = User.objects.normalize_email(self.cleaned_data["email"]).lower()
        if User.objects.filter(email__iexact=email).exists():
            raise forms.ValidationError("A user with this email address already exists.")
        return email


class UserChangeAdminForm(UserChangeForm):
    class Meta:
        model = User
        fields = (
            "email",
            "password",
            "first_name",
            "last_name",
            "is_active",
            "is_staff",
            "is_superuser",
            "groups",
            "user_permissions",
        )

    def clean_email(self) -> str:
        email = User.objects.normalize_email(self.cleaned_data["email"]).lower()
        twins = User.objects.filter(email__iexact=email).exclude(pk=self.instance.pk)
        if twins.exists():
            raise forms.ValidationError("A user with this email address already exists.")
        return email


@admin.register(User)
class UserAdmin(AuditedAdminMixin, DjangoUserAdmin):
    audit_fields = ("email", "is_active", "is_staff", "is_superuser")
    audit_secret_fields = ("password",)
    form = UserChangeAdminForm
    add_form = UserCreationAdminForm
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Personal info", {"fields": ("first_name", "last_name")}),
        (
            "Permissions",
            {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")},
        ),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = (
        (
            None,
            {
                "classes": ("wide",),
                "fields": ("email", "usable_password", "password1", "password2"),
            },
        ),
    )
    list_display = ("email", "is_staff", "is_active", "date_joined")
    list_filter = ("is_staff", "is_superuser", "is_active")
    search_fields = ("email",)
    ordering = ("email",)
    readonly_fields = ("last_login", "date_joined")
    show_full_result_count = False  # no second COUNT(*) on a big table for every search
    actions = ("suspend_selected", "reinstate_selected")

    @admin.action(description="Suspend selected users (no log-in, API keys refused)",
                  permissions=["change"])  # fmt: skip
    def suspend_selected(self, request, queryset):
        users = queryset.exclude(pk=request.user.pk)

        def run():
            count = users_set_active(users=users, active=False, actor=request.user)
            self.message_user(request, f"Suspended {count} user(s).", messages.SUCCESS)

        return confirm_bulk(
            self, request, title="Suspend these users?", run=run,
            rows=[(u, "active", "suspended: no log-in, API keys refused")
                  for u in users.filter(is_active=True)],
            note="You are never suspended by your own action.",
        )  # fmt: skip

    @admin.action(description="Reinstate selected users", permissions=["change"])
    def reinstate_selected(self, request, queryset):
        def run():
            count = users_set_active(users=queryset, active=True, actor=request.user)
            self.message_user(request, f"Reinstated {count} user(s).", messages.SUCCESS)

        return confirm_bulk(
            self, request, title="Reinstate these users?", run=run,
            rows=[(u, "suspended", "active") for u in queryset.filter(is_active=False)],
        )  # fmt: skip

    def get_deleted_objects(self, objs, request):
        # The key admin refuses to delete single keys (revoke them instead), which would also
        # block deleting their owner: a user's keys go with the user.
        to_delete, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        perms_needed.discard(apps.get_model("apikeys", "ApiKey")._meta.verbose_name)
        return to_delete, model_count, perms_needed, protected


# --- organizations ----------------------------------------------------------------------------


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ("user",)
    fields = ("user", "role", "created_at")
    readonly_fields = ("created_at",)


@admin.register(Organization)
class OrganizationAdmin(AuditedAdminMixin, admin.ModelAdmin):
    audit_fields = ("name", "slug", "plan", "suspended_at")
    list_display = ("name", "slug", "plan", "personal", "suspended_at", "created_at")
    list_filter = ("plan", "personal")
    list_select_related = ("plan",)
    search_fields = ("name", "slug", "memberships__user__email")
    readonly_fields = ("created_at", "suspended_at", "keys_and_usage")
    fields = ("name", "slug", "plan", "personal", "suspended_at", "created_at", "keys_and_usage")
    inlines = (MembershipInline,)
    show_full_result_count = False
    actions = ("suspend_selected", "reinstate_selected")

    @admin.display(description="Keys and usage")
    def keys_and_usage(self, org: Organization):
        if org.pk is None:
            return "—"
        # Links, not inlines: an organization may hold thousands of keys and ledger rows.
        return format_html(
            '<a href="{}?org__id__exact={}">API keys</a> · '
            '<a href="{}?org__id__exact={}">Daily usage ledgers</a>',
            reverse("admin:apikeys_apikey_changelist"),
            org.pk,
            reverse("admin:metering_dailyusage_changelist"),
            org.pk,
        )

    @admin.action(description="Suspend selected organizations (all their keys refused)",
                  permissions=["change"])  # fmt: skip
    def suspend_selected(self, request, queryset):
        def run():
            count = orgs_set_suspended(orgs=queryset, suspended=True, actor=request.user)
            self.message_user(request, f"Suspended {count} organization(s).", messages.SUCCESS)

        return confirm_bulk(
            self, request, title="Suspend these organizations?", run=run,
            rows=[(o, "active", "suspended: all their API keys refused")
                  for o in queryset.filter(suspended_at__isnull=True)],
        )  # fmt: skip

    @admin.action(description="Reinstate selected organizations", permissions=["change"])
    def reinstate_selected(self, request, queryset):
        def run():
            count = orgs_set_suspended(orgs=queryset, suspended=False, actor=request.user)
            self.message_user(request, f"Reinstated {count} organization(s).", messages.SUCCESS)

        return confirm_bulk(
            self, request, title="Reinstate these organizations?", run=run,
            rows=[(o, "suspended", "active") for o in queryset.filter(suspended_at__isnull=False)],
        )  # fmt: skip

    def get_actions(self, request):
        actions = super().get_actions(request)
        if not self.has_change_permission(request):
            return actions
        # One "move to plan" action per plan: plans are few, and this keeps bulk moves to a
        # single UPDATE through the same service as everything else.
        for plan in Plan.objects.order_by("name").only("pk", "name"):
            name = f"set_plan_{plan.pk}"
            actions[name] = (
                _set_plan_action(plan),
                name,
                f"Move selected organizations to plan “{plan.name}”",
            )
        return actions


def _set_plan_action(plan: Plan):
    def action(modeladmin, request, queryset):
        def run():
            count = org_set_plan(orgs=queryset, plan=plan, actor=request.user)
            modeladmin.message_user(
                request, f"Moved {count} organization(s) to plan “{plan.name}”.", messages.SUCCESS
            )

        default = Plan.objects.default()
        return confirm_bulk(
            modeladmin, request, title=f"Move these organizations to plan “{plan.name}”?",
            run=run,
            rows=[(o, (o.plan.name if o.plan else f"default ({default})"), plan.name)
                  for o in queryset.select_related("plan") if o.plan_id != plan.pk],
        )  # fmt: skip

    return action


# --- plans ------------------------------------------------------------------------------------


class PlanAdminForm(forms.ModelForm):
    models = forms.ModelMultipleChoiceField(
        queryset=None,
        required=False,
        widget=FilteredSelectMultiple("models", is_stacked=False),
        help_text="Used only when “all models” is off: the models this plan may call.",
    )

    class Meta:
        model = Plan
        fields = ("name", "description", "is_default", *Plan.LIMIT_FIELDS, "all_models")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The catalog's model, reached through the relation: accounts sits below the catalog.
        catalog_model = Plan._meta.get_field("models").related_model
        self.fields["models"].queryset = catalog_model.objects.order_by("public_id")
        if self.instance.pk:
            self.fields["models"].initial = list(self.instance.models.values_list("pk", flat=True))
        for name, text in LIMIT_HELP.items():
            self.fields[name].help_text = text

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("is_default"):
            other = Plan.objects.filter(is_default=True).exclude(pk=self.instance.pk).first()
            if other is not None:
                self.add_error(
                    "is_default",
                    f"“{other.name}” is the default plan already; untick it there first.",
                )
        return cleaned

    def _save_m2m(self):
        super()._save_m2m()
        # The relation lives on CatalogModel.plans; setting it from here sends the same
        # m2m_changed signal, so the routing table is rebuilt after commit.
        self.instance.models.set(self.cleaned_data["models"])


@admin.register(Plan)
class PlanAdmin(AuditedAdminMixin, BoundedIntegersAdminMixin, admin.ModelAdmin):
    audit_fields = ("name", "is_default", *Plan.LIMIT_FIELDS, "all_models")
    form = PlanAdminForm
    list_display = (
        "name",
        "is_default",
        "rpm",
        "tpm",
        "requests_day",
        "tokens_day",
        "requests_month",
        "tokens_month",
        "concurrent",
        "all_models",
        "org_count",
    )
    list_filter = ("is_default", "all_models")
    search_fields = ("name", "description")
    ordering = ("name",)
    empty_value_display = "unlimited"
    readonly_fields = ("created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "description", "is_default")}),
        (
            "Rates",
            {
                "fields": ("requests_per_minute", "tokens_per_minute", "max_concurrent_requests"),
                "description": "Empty = unlimited. A key may narrow its owner's rates.",
            },
        ),
        (
            "Quotas",
            {
                "fields": (
                    "requests_per_day",
                    "tokens_per_day",
                    "requests_per_month",
                    "tokens_per_month",
                ),
                "description": "Empty = unlimited.",
            },
        ),
        ("Models", {"fields": ("all_models", "models")}),
        ("History", {"fields": ("created_at", "updated_at"), "classes": ("collapse",)}),
    )

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(org_count=Count("organizations"))

    # Short column titles: the full names make the list wider than most screens.
    @admin.display(description="RPM", ordering="requests_per_minute")
    def rpm(self, plan: Plan):
        return plan.requests_per_minute

    @admin.display(description="TPM", ordering="tokens_per_minute")
    def tpm(self, plan: Plan):
        return plan.tokens_per_minute

    @admin.display(description="requests/day", ordering="requests_per_day")
    def requests_day(self, plan: Plan):
        return plan.requests_per_day

    @admin.display(description="tokens/day", ordering="tokens_per_day")
    def tokens_day(self, plan: Plan):
        return plan.tokens_per_day

    @admin.display(description="requests/month", ordering="requests_per_month")
    def requests_month(self, plan: Plan):
        return plan.requests_per_month

    @admin.display(description="tokens/month", ordering="tokens_per_month")
    def tokens_month(self, plan: Plan):
        return plan.tokens_per_month

    @admin.display(description="concurrent", ordering="max_concurrent_requests")
    def concurrent(self, plan: Plan):
        return plan.max_concurrent_requests

    @admin.display(description="organizations", ordering="org_count")
    def org_count(self, plan: Plan):
        url = reverse("admin:accounts_organization_changelist") + f"?plan__id__exact={plan.pk}"
        return format_html('<a href="{}">{}</a>', url, plan.org_count)
