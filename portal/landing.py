"""The public landing page; allauth serves the account pages themselves."""

from __future__ import annotations

from django.shortcuts import render
from django.views.decorators.http import require_safe

from catalog.selectors import catalog_enabled_models

# Shown in the get-started snippet when the catalog is still empty.
EXAMPLE_MODEL_PLACEHOLDER = "MODEL_ID"


@require_safe
def landing(request):
    models = catalog_enabled_models()
    example_model = models[0].public_id if models else EXAMPLE_MODEL_PLACEHOLDER
    return render(request, "landing.html", {"models": models, "example_model": example_model})
