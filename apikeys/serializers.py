"""Input and output shapes of the key management API (/api/keys)."""

from __future__ import annotations

from django.utils import timezone
from rest_framework import serializers

from apikeys.models import ApiKey
from apikeys.selectors import apikey_model_choices
from core.bounds import column_range


class ApiKeyOutputSerializer(serializers.ModelSerializer):
    """A key as the owner sees it: never the hash, and the secret only in the create answer."""

    object = serializers.SerializerMethodField()
    prefix = serializers.CharField(source="display_prefix", read_only=True)
    status = serializers.CharField(read_only=True)
    models = serializers.SerializerMethodField()
    previous_secret_valid_until = serializers.SerializerMethodField()

    class Meta:
        model = ApiKey
        fields = [
            "id", "object", "name", "prefix", "public_id", "status", "created_at",
            "last_used_at", "expires_at", "revoked_at", "models", "requests_per_minute",
            "tokens_per_minute", "requests_per_day", "tokens_per_day", "requests_per_month",
            "tokens_per_month", "rotated_at", "previous_secret_valid_until",
        ]  # fmt: skip
        read_only_fields = fields

    def get_object(self, key: ApiKey) -> str:
        return "api_key"

    def get_models(self, key: ApiKey) -> list[str]:
        # Reads the prefetched subset (selectors) instead of one query per key.
        return sorted(model.public_id for model in key.allowed_models.all())

    def get_previous_secret_valid_until(self, key: ApiKey) -> str | None:
        """When the secret before the last rotation stops working (null: it already has)."""
        if not key.in_rotation_grace or key.previous_valid_until is None:
            return None
        return serializers.DateTimeField().to_representation(key.previous_valid_until)


class ApiKeyCreatedSerializer(ApiKeyOutputSerializer):
    key = serializers.SerializerMethodField()

    class Meta(ApiKeyOutputSerializer.Meta):
        fields = [*ApiKeyOutputSerializer.Meta.fields, "key"]
        read_only_fields = fields

    def get_key(self, key: ApiKey) -> str:
        return self.context["secret"]


def _limit_field(name: str, *, help_text: str) -> serializers.IntegerField:
    return serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=column_range(ApiKey, name)[1],
        help_text=help_text,
    )


class _KeySettingsSerializer(serializers.Serializer):
    """What can be set on a key when it is made and changed later."""

    expires_at = serializers.DateTimeField(required=False, allow_null=True)
    models = serializers.ListField(
        child=serializers.CharField(max_length=128), required=False, max_length=200
    )
    requests_per_minute = _limit_field("requests_per_minute", help_text="null: the plan's")
    tokens_per_minute = _limit_field("tokens_per_minute", help_text="null: the plan's")
    requests_per_day = _limit_field("requests_per_day", help_text="null: no key budget")
    tokens_per_day = _limit_field("tokens_per_day", help_text="null: no key budget")
    requests_per_month = _limit_field("requests_per_month", help_text="null: no key budget")
    tokens_per_month = _limit_field("tokens_per_month", help_text="null: no key budget")

    def validate_expires_at(self, value):
        if value is not None and value <= timezone.now():
            raise serializers.ValidationError("The expiry must be in the future.")
        return value

    def validate_models(self, value: list[str]):
        wanted = set(value)
        found = list(apikey_model_choices().filter(public_id__in=wanted))
        missing = wanted - {model.public_id for model in found}
        if missing:
            raise serializers.ValidationError(
                f"Unknown or disabled model(s): {', '.join(sorted(missing))}. "
                "GET /v1/models lists the models you can use."
            )
        return found


class ApiKeyCreateInputSerializer(_KeySettingsSerializer):
    name = serializers.CharField(max_length=100)


class ApiKeyUpdateInputSerializer(_KeySettingsSerializer):
    """PATCH: only the fields sent change; null clears an expiry, a cap or a budget, and
    `models: []` lets the key use every model the plan allows."""

    name = serializers.CharField(max_length=100, required=False)

    def validate(self, attrs):
        unknown = set(self.initial_data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError(
                {sorted(unknown)[0]: "Not a field of a key that can be changed."}
            )
        return attrs


class ApiKeyRotateInputSerializer(serializers.Serializer):
    grace_seconds = serializers.IntegerField(
        required=False,
        min_value=0,
        max_value=30 * 86_400,
        default=86_400,
        help_text="How long the old secret keeps working (0: it stops at once).",
    )
