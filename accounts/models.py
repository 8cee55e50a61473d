from __future__ import annotations

import hashlib
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.db import models
from django.utils import timezone


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def _create_user(self, email: str, password: str | None, **extra):
        if not email:
            raise ValueError("An email address is required")
        # `plan`: the plan of the user's personal organization (made when the user is saved).
        plan = extra.pop("plan", None)
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user._personal_plan = plan  # type: ignore[attr-defined] # read by accounts.receivers
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

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []  # type: ignore[misc]

    objects = UserManager()  # type: ignore[misc,assignment] # create_user by email

    class Meta:
        ordering = ["email"]

    def __str__(self) -> str:
        return self.email


class Role(models.TextChoices):
    """What a member may do in an organization; each role includes the ones below it."""

    OWNER = "owner", "owner"  # everything: plan-relevant settings, deleting the organization
    ADMIN = "admin", "admin"  # members, invitations, every key of the organization
    MEMBER = "member", "member"  # creates keys, revokes their own, sees the usage


ROLE_RANK = {Role.MEMBER: 1, Role.ADMIN: 2, Role.OWNER: 3}


class OrganizationQuerySet(models.QuerySet["Organization"]):
    def for_user(self, user) -> OrganizationQuerySet:
        return self.filter(memberships__user=user)


class Organization(models.Model):
    """Who owns everything billable: keys, the plan, limit counters, usage. Every user has a
    personal one (`personal`), so a single developer is a team of one."""

    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=64, unique=True)
    plan = models.ForeignKey(
        Plan, null=True, blank=True, on_delete=models.SET_NULL, related_name="organizations"
    )
    personal = models.BooleanField(
        default=False, help_text="Made for one user at sign-up; cannot be left or deleted."
    )
    suspended_at = models.DateTimeField(
        null=True, blank=True, help_text="Set: every key of the organization answers 401."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = OrganizationQuerySet.as_manager()

    class Meta:
        ordering = ["name", "pk"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_suspended(self) -> bool:
        return self.suspended_at is not None


class Membership(models.Model):
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["org", "user"], name="membership_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.org_id} ({self.role})"

    def allows(self, role: str) -> bool:
        """Whether this member's role is `role` or above."""
        return ROLE_RANK[Role(self.role)] >= ROLE_RANK[Role(role)]


INVITATION_DAYS = 7


def invitation_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _invitation_expiry():
    return timezone.now() + timedelta(days=INVITATION_DAYS)


class Invitation(models.Model):
    """An invitation by email, with a role; single use, expires after INVITATION_DAYS. Only the
    token's hash is stored: the link in the email is the only copy of the token."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(default=_invitation_expiry)
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.email} to {self.org_id} ({self.role})"

    @property
    def status(self) -> str:
        if self.accepted_at:
            return "accepted"
        if self.revoked_at:
            return "revoked"
        if self.expires_at <= timezone.now():
            return "expired"
        return "pending"
