"""One way to render every form: FORM_RENDERER points here, so `{{ form }}` and
`{{ field.as_field_group }}` (portal pages and allauth's, through
templates/allauth/elements/fields.html) all go through templates/forms/."""

from __future__ import annotations

from django.forms.renderers import TemplatesSetting


class PortalFormRenderer(TemplatesSetting):
    form_template_name = "forms/form.html"
    field_template_name = "forms/field.html"
