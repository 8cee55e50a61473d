"""Fold pending usage records into the daily ledgers now (what the Celery beat task does)."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand

from metering.services import AGGREGATE_BATCH, usage_aggregate


class Command(BaseCommand):
    help = "Fold not-yet-aggregated usage records into the DailyUsage ledgers and print the count."

    def add_arguments(self, parser):
        parser.add_argument(
            "--batch-size",
            type=int,
            default=AGGREGATE_BATCH,
            help=f"Records per transaction (default {AGGREGATE_BATCH}).",
        )

    def handle(self, *args, batch_size: int, **options):
        started = time.monotonic()
        folded = usage_aggregate(batch_size=max(1, batch_size))
        elapsed = time.monotonic() - started
        self.stdout.write(f"Aggregated {folded} usage records in {elapsed:.2f}s.")
