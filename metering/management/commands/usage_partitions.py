"""The usage table's monthly partitions (PostgreSQL): list them, and create the months ahead.

Beat does the same every day (metering.tasks.usage_partitions); run this after a long outage
of beat, or to see what there is. Retention drops old months (metering.tasks.prune_usage).
"""

from __future__ import annotations

from django.core.management.base import BaseCommand

from metering.partitions import (
    MONTHS_AHEAD,
    is_partitioned,
    usage_partitions,
    usage_partitions_ensure,
)


class Command(BaseCommand):
    help = "Create the usage table's monthly partitions ahead and list them (PostgreSQL)."

    def add_arguments(self, parser):
        parser.add_argument("--months-ahead", type=int, default=MONTHS_AHEAD)

    def handle(self, *args, months_ahead: int = MONTHS_AHEAD, **options):
        if not is_partitioned():
            self.stdout.write("The usage table is not partitioned (SQLite): nothing to do.")
            return
        for name in usage_partitions_ensure(months_ahead=months_ahead):
            self.stdout.write(f"created {name}")
        for month in usage_partitions():
            self.stdout.write(month.name)
