from allauth.account.adapter import DefaultAccountAdapter


class AccountAdapter(DefaultAccountAdapter):
    """New sign-ups get a personal organization on the default plan (accounts.receivers)."""
