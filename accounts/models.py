from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.db import models


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def _create_user(self, email: str, password: str | None, **extra):
        if not email:
            raise ValueError("An email address is required")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        if password:
            user.set_password(password)
        else:
            user.set_unusable_password()
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **extra):
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra)

    def create_superuser(self, email: str, password: str | None = None, **extra):
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        return self._create_user(email, password, **extra)


class PlanQuerySet(models.QuerySet["Plan"]):
    def default(self) -> Plan | None:
        return (
            self.filter(is_default=True).first()
            or self.filter(name=settings.DEFAULT_PLAN_NAME).first()
        )


class Plan(models.Model):
    """What a customer may do: rates, quotas, concurrency and models. Empty means unlimited."""

    name = models.SlugField(max_length=64, unique=True)
    description = models.CharField(max_length=200, blank=True)
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute = models.PositiveIntegerField(null=True, blank=True)
    requests_per_day = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_day = models.PositiveBigIntegerField(null=True, blank=True)
    requests_per_month = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_month = models.PositiveBigIntegerField(null=True, blank=True)
    max_concurrent_requests = models.PositiveIntegerField(null=True, blank=True)
    all_models = models.BooleanField(
        default=True, help_text="Every enabled model; otherwise only the models listed on them."
    )
    is_default = models.BooleanField(default=False, help_text="Given to new sign-ups.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = PlanQuerySet.as_manager()

    LIMIT_FIELDS = (
        "requests_per_minute",
        "tokens_per_minute",
        "requests_per_day",
        "tokens_per_day",
        "requests_per_month",
        "tokens_per_month",
        "max_concurrent_requests",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def limits(self) -> dict[str, int | None]:
        return {name: getattr(self, name) for name in self.LIMIT_FIELDS}


class User(AbstractUser):
    username = None  # type: ignore[assignment] # email is the login: no username column
    email = models.EmailField("email address", unique=True)
    plan = models.ForeignKey(
        Plan, null=True, blank=True, on_delete=models.SET_NULL, related_name="users"
    )

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []  # type: ignore[misc]

    objects = UserManager()  # type: ignore[misc,assignment] # create_user by email

    class Meta:
        ordering = ["email"]

    def __str__(self) -> str:
        return self.email
