"""Forms for the key pages: input validation only; the services do the work."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, time, timedelta

from django import forms
from django.utils import timezone

from apikeys.selectors import apikey_model_choices

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
