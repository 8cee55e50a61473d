"""``manage.py run_router_sim``: the router simulator, with the same options as
``python -m inference.simulator`` (see that module for what each fault does)."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand

from inference import simulator


class Command(BaseCommand):
    help = "Run the fake Cortensor router (a gevent server) for development and benchmarks."
    # The simulator touches no database and needs no checks; starting fast is the point.
    requires_system_checks: list[str] = []
    requires_migrations_checks = False

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        simulator.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        # serve(), not main(): main() monkey-patches the stdlib, which is too late once Django
        # has imported ssl (gevent warns) and unnecessary, since the simulator does all its I/O
        # through gevent's own sockets and sleeps.
        simulator.serve(simulator.config_from_options(options))
