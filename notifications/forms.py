"""Forms for the notification pages: input validation only; the services do the work."""

from __future__ import annotations

from django import forms

from notifications.models import THRESHOLD_CHOICES, Event


class EmailPrefsForm(forms.Form):
    emailed = forms.MultipleChoiceField(
        choices=Event.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Email me about",
        help_text="The list in the portal keeps every notification whatever you choose.",
    )


class ThresholdsForm(forms.Form):
    thresholds = forms.TypedMultipleChoiceField(
        choices=[(t, f"{t}%") for t in THRESHOLD_CHOICES],
        coerce=int,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Notify at these shares of each quota",
    )


class EndpointForm(forms.Form):
    url = forms.CharField(
        max_length=500, label="Endpoint URL", help_text="HTTPS; we POST signed JSON events to it."
    )
    description = forms.CharField(max_length=200, required=False)
