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

    class Meta:
        model = ApiKey
        fields = [
            "id", "object", "name", "prefix", "public_id", "status", "created_at",
            "last_used_at", "expires_at", "revoked_at", "models", "requests_per_minute",
            "tokens_per_minute",
        ]  # fmt: skip
        read_only_fields = fields

    def get_object(self, key: ApiKey) -> str:
        return "api_key"

    def get_models(self, key: ApiKey) -> list[str]:
        # Reads the prefetched subset (selectors) instead of one query per key.
        return sorted(model.public_id for model in key.allowed_models.all())


class ApiKeyCreatedSerializer(ApiKeyOutputSerializer):
    key = serializers.SerializerMethodField()

    class Meta(ApiKeyOutputSerializer.Meta):
        fields = [*ApiKeyOutputSerializer.Meta.fields, "key"]
        read_only_fields = fields

    def get_key(self, key: ApiKey) -> str:
        return self.context["secret"]


class ApiKeyCreateInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    expires_at = serializers.DateTimeField(required=False, allow_null=True)
    models = serializers.ListField(
        child=serializers.CharField(max_length=128), required=False, max_length=200
    )
    requests_per_minute = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=column_range(ApiKey, "requests_per_minute")[1],
    )
    tokens_per_minute = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=column_range(ApiKey, "tokens_per_minute")[1],
    )

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
