"""Integer inputs are bounded by the column they are stored in.

A number beyond its column (`requests_per_minute: 3000000000` into a PostgreSQL integer) made
the INSERT fail with a 500. Every integer input (the key API, the admin's forms,
`apply_config`) is checked against its column's range first, so the caller gets a 400 (or a
form error) naming the field. The ranges are PostgreSQL's, whatever database runs: SQLite
would store larger numbers, and a value should not be valid on one install and not another.
"""

from __future__ import annotations

from django.db import models
from django.db.backends.base.operations import BaseDatabaseOperations


def field_range(field: models.Field) -> tuple[int, int]:
    return BaseDatabaseOperations.integer_field_ranges[field.get_internal_type()]


def column_range(model: type[models.Model], field_name: str) -> tuple[int, int]:
    field = model._meta.get_field(field_name)
    assert isinstance(field, models.Field), f"{field_name} is a relation, not a column"
    return field_range(field)


class BoundedIntegersAdminMixin:
    """For ModelAdmin and inlines: integer form fields refuse what their column cannot hold."""

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        formfield = super().formfield_for_dbfield(db_field, request, **kwargs)
        if isinstance(db_field, models.IntegerField) and not db_field.primary_key and formfield:
            low, high = field_range(db_field)
            _narrow(formfield, low, high)
        return formfield


def _narrow(formfield, low: int, high: int) -> None:
    from django.core.validators import MaxValueValidator, MinValueValidator

    if formfield.max_value is None or formfield.max_value > high:
        formfield.max_value = high
        formfield.validators.append(MaxValueValidator(high))
        formfield.widget.attrs["max"] = high
    if formfield.min_value is None or formfield.min_value < low:
        formfield.min_value = low
        formfield.validators.append(MinValueValidator(low))
        formfield.widget.attrs["min"] = low
