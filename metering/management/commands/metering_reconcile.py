from django.core.management.base import BaseCommand

from metering.recording import usage_journal_reconcile, usage_spool_drain


class Command(BaseCommand):
    help = (
        "Write usage records that are still outside the table: those spooled while the "
        "database was down, and those of requests whose process died (admission journal)."
    )

    def handle(self, *args, **options):
        drained = usage_spool_drain()
        recovered = usage_journal_reconcile()
        self.stdout.write(
            f"{drained} spooled records written, {recovered} records recovered "
            "from the admission journal"
        )
