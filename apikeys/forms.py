"""Forms for the key pages: input validation only; the services do the work."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, time, timedelta

from django import forms
from django.utils import timezone

from apikeys.models import ApiKey
from apikeys.selectors import apikey_model_choices
from core.bounds import column_range

EXPIRY_CHOICES = [
    ("never", "Never"),
    ("7", "In 7 days"),
    ("30", "In 30 days"),
    ("90", "In 90 days"),
    ("date", "On a date…"),
]


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        help_text="Something to recognise it by, e.g. “production server”.",
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )
    expires = forms.ChoiceField(
        required=False,
        label="Expires",
        choices=EXPIRY_CHOICES,
        initial="never",
        help_text="A key that expires stops working on its own: good for tests and contractors.",
    )
    expires_on = forms.DateField(
        required=False,
        label="Expiry date",
        help_text="With “On a date”: the key stops working at 00:00 UTC on this date.",
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    models: forms.ModelMultipleChoiceField = forms.ModelMultipleChoiceField(
        queryset=None,
        required=False,
        label="Models (optional)",
        help_text="Limit the key to these models. None ticked: every model your plan allows.",
        widget=forms.CheckboxSelectMultiple,
        to_field_name="public_id",
    )
    # A one-time token: re-sending the same form (reload, back button) must not make a second
    # key, and never shows a secret again.
    nonce = forms.CharField(widget=forms.HiddenInput, max_length=64)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["models"].queryset = apikey_model_choices()
        if not self.fields["models"].queryset.exists():
            del self.fields["models"]  # nothing to choose from: no empty fieldset
        if not self.is_bound:
            self.initial.setdefault("nonce", secrets.token_urlsafe(16))

    def clean_expires_on(self):
        day = self.cleaned_data.get("expires_on")
        if day is not None and day <= timezone.now().date():
            raise forms.ValidationError("Choose a date after today (UTC).")
        return day

    def clean(self):
        cleaned = super().clean()
        choice = cleaned.get("expires") or ""
        day = cleaned.get("expires_on")
        if not choice:  # a form sent without the menu (older pages, scripts): the date decides
            choice = "date" if day else "never"
        if choice == "date" and day is None and "expires_on" not in self.errors:
            self.add_error("expires_on", "Choose the date the key should stop working.")
        cleaned["expires"] = choice
        return cleaned

    @property
    def expires_at(self) -> datetime | None:
        choice = self.cleaned_data.get("expires")
        if choice == "date":
            day = self.cleaned_data.get("expires_on")
            return datetime.combine(day, time.min, tzinfo=UTC) if day else None
        if choice and choice.isdigit():
            return timezone.now() + timedelta(days=int(choice))
        return None


class ApiKeyRevokeForm(forms.Form):
    confirm = forms.BooleanField(
        required=True,
        label="I understand that anything using this key will stop working immediately.",
        error_messages={"required": "Tick the box to confirm."},
    )


EDIT_EXPIRY_CHOICES = [("keep", "Keep as it is"), *EXPIRY_CHOICES]
_LIMIT_HELP = {
    "requests_per_minute": "Empty: the plan's rate.",
    "tokens_per_minute": "Empty: the plan's rate.",
    "requests_per_day": "This key's own cap per UTC day. Empty: only the plan's quota.",
    "tokens_per_day": "Prompt plus completion tokens per UTC day. Empty: only the plan's.",
    "requests_per_month": "Per UTC calendar month. Empty: only the plan's quota.",
    "tokens_per_month": "Per UTC calendar month. Empty: only the plan's quota.",
}


class ApiKeyEditForm(forms.Form):
    """The key page's settings: name, expiry, models, per-minute caps and budgets. Every field
    is sent every time; the service records only what changed."""

    name = forms.CharField(max_length=100, widget=forms.TextInput(attrs={"autocomplete": "off"}))
    expires = forms.ChoiceField(
        required=False, label="Expires", choices=EDIT_EXPIRY_CHOICES, initial="keep"
    )
    expires_on = forms.DateField(
        required=False,
        label="Expiry date",
        help_text="With “On a date”: the key stops working at 00:00 UTC on this date.",
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    models: forms.ModelMultipleChoiceField = forms.ModelMultipleChoiceField(
        queryset=None,
        required=False,
        label="Models",
        help_text="None ticked: every model the plan allows.",
        widget=forms.CheckboxSelectMultiple,
        to_field_name="public_id",
    )

    def __init__(self, *args, key=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["models"].queryset = apikey_model_choices()
        for name, help_text in _LIMIT_HELP.items():
            self.fields[name] = forms.IntegerField(
                required=False,
                min_value=1,
                max_value=column_range(ApiKey, name)[1],
                label=name.replace("_", " ").capitalize(),
                help_text=help_text,
            )
        if key is not None and not self.is_bound:
            self.initial.update(
                name=key.name,
                models=[m.public_id for m in key.allowed_models.all()],
                **{name: getattr(key, name) for name in _LIMIT_HELP},
            )

    def clean_expires_on(self):
        day = self.cleaned_data.get("expires_on")
        if day is not None and day <= timezone.now().date():
            raise forms.ValidationError("Choose a date after today (UTC).")
        return day

    def clean(self):
        cleaned = super().clean()
        choice = cleaned.get("expires") or "keep"
        if (
            choice == "date"
            and cleaned.get("expires_on") is None
            and "expires_on" not in self.errors
        ):
            self.add_error("expires_on", "Choose the date the key should stop working.")
        cleaned["expires"] = choice
        return cleaned

    def changes(self) -> dict:
        """The service's keyword arguments: every setting, the expiry only if not kept."""
        data = self.cleaned_data
        changes = {
            "name": data["name"],
            "allowed_models": list(data.get("models") or ()),
            **{name: data.get(name) for name in _LIMIT_HELP},
        }
        choice = data["expires"]
        if choice == "never":
            changes["expires_at"] = None
        elif choice == "date":
            changes["expires_at"] = datetime.combine(data["expires_on"], time.min, tzinfo=UTC)
        elif choice.isdigit():
            changes["expires_at"] = timezone.now() + timedelta(days=int(choice))
        return changes


ROTATE_GRACE_CHOICES = [
    ("86400", "In 24 hours (recommended: time to deploy the new secret)"),
    ("3600", "In 1 hour"),
    ("604800", "In 7 days"),
    ("0", "At once (the old secret was leaked)"),
]


class ApiKeyRotateForm(forms.Form):
    grace = forms.TypedChoiceField(
        label="The old secret stops working",
        choices=ROTATE_GRACE_CHOICES,
        coerce=int,
        initial="86400",
    )
