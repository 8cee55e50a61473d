"""`manage.py apikey_rotate --key ctsk_<id>… [--grace-seconds S]`

Support's answer to a leaked key: a new secret for the same key (same id, name, budgets and
usage history). Prints only the new secret on stdout, so scripts can capture it:
    NEW=$(python manage.py apikey_rotate --key ctsk_abc123 --grace-seconds 0)
The old secret keeps working for --grace-seconds (default 86400; 0: it stops at once). What
was done, and errors, go to stderr.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from apikeys.keyformat import KEY_PREFIX
from apikeys.models import ApiKey
from apikeys.services import ROTATION_GRACE_DEFAULT, apikey_rotate
from core.errors import ApiError

ACTOR_LABEL = "manage.py apikey_rotate"


class Command(BaseCommand):
    help = "Rotate an API key's secret and print only the new secret on stdout."

    def add_arguments(self, parser):
        parser.add_argument(
            "--key", required=True, help="The key's prefix (ctsk_<id>), or the whole key."
        )
        parser.add_argument(
            "--grace-seconds",
            type=int,
            default=ROTATION_GRACE_DEFAULT,
            help="How long the old secret keeps working (0: it stops at once).",
        )

    def handle(self, *args, key: str, grace_seconds: int, **options):
        public_id = key.strip().removeprefix(KEY_PREFIX).split("_")[0].rstrip("…")
        record = ApiKey.objects.filter(public_id=public_id).first()
        if record is None:
            raise CommandError(f"No API key {KEY_PREFIX}{public_id}.")
        try:
            record, secret = apikey_rotate(
                key=record, grace_seconds=grace_seconds, actor_label=ACTOR_LABEL
            )
        except ApiError as exc:
            raise CommandError(exc.message) from None
        until = (
            f"works until {record.previous_valid_until:%Y-%m-%d %H:%M:%S} UTC"
            if record.previous_valid_until
            else "stopped working now"
        )
        self.stderr.write(
            f"Rotated {record.display_prefix} ({record.name!r}): the old secret {until}."
        )
        self.stdout.write(secret)
