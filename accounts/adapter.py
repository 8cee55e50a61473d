from allauth.account.adapter import DefaultAccountAdapter

from accounts.models import Plan


class AccountAdapter(DefaultAccountAdapter):
    def save_user(self, request, user, form, commit=True):
        # New sign-ups start on the default plan (Plan.is_default, else settings.DEFAULT_PLAN).
        if user.plan_id is None:
            user.plan = Plan.objects.default()
        return super().save_user(request, user, form, commit=commit)
