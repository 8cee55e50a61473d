"""Forms for the key pages: input validation only; the services do the work."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, time

from django import forms
from django.utils import timezone

from apikeys.selectors import apikey_model_choices


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        help_text="Something to recognise it by, e.g. “production server”.",
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )
    expires_on = forms.DateField(
        required=False,
        label="Expiry date (optional)",
        help_text="The key stops working at 00:00 UTC on this date. Empty: it never expires.",
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

    @property
    def expires_at(self) -> datetime | None:
        day = self.cleaned_data.get("expires_on")
        return datetime.combine(day, time.min, tzinfo=UTC) if day else None


class ApiKeyRevokeForm(forms.Form):
    confirm = forms.BooleanField(
        required=True,
        label="I understand that anything using this key will stop working immediately.",
        error_messages={"required": "Tick the box to confirm."},
    )
