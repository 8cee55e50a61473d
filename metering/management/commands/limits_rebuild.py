"""Rebuild the limit counters in Redis from the usage records, after Redis lost its data.

UsageRecord is the source of truth. Today's and this month's admitted requests and their
tokens per organization (a request refused by a limit or for bad input was never counted)
become the day and month counters; the last minute's records refill the per-minute windows of
organizations and keys. Safe to run any number of times: a counter is only raised to the
database's count, never lowered (it may hold requests admitted since Redis came back that have
no record yet), unless --force.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand

from metering.services import limits_rebuild


class Command(BaseCommand):
    help = "Rebuild the day, month and per-minute limit counters in Redis from UsageRecord."

    def add_arguments(self, parser):
        parser.add_argument(
            "--force",
            action="store_true",
            help="Overwrite the day and month counters even when Redis holds "
            "more than the database (drops in-flight reservations).",
        )

    def handle(self, *args, force: bool = False, **options):
        rebuilt = limits_rebuild(force=force)
        if rebuilt is None:
            self.stdout.write(
                "No REDIS_URL: limits live in each server process's memory; "
                "there is nothing to rebuild."
            )
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"Rebuilt day ({rebuilt.day}) and month ({rebuilt.month}) counters for "
                f"{rebuilt.orgs} organization(s) and {rebuilt.requests_in_window} request(s) "
                "of the last minute."
            )
        )
