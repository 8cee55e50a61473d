import getpass
import json
import socket
from pathlib import Path

import yaml
from django.core.management.base import BaseCommand, CommandError

from audit.services import staff_action_record
from catalog.services import ConfigInvalid, catalog_apply_config


class Command(BaseCommand):
    help = "Upsert plans, router pools, routers and models from a JSON or YAML file (atomic)."

    def add_arguments(self, parser):
        parser.add_argument("file")

    def handle(self, *args, file, **options):
        path = Path(file)
        try:
            text = path.read_text()
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc.strerror}") from None
        try:
            config = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise CommandError(
                f"{file} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                f"{str(exc).splitlines()[0]}"
            ) from None
        try:
            result = catalog_apply_config(config=config)
        except ConfigInvalid as exc:
            raise CommandError(f"{file}: {exc} (nothing was applied)") from None
        staff_action_record(
            action="catalog.apply_config",
            actor_label=f"apply_config by {getpass.getuser()}@{socket.gethostname()}",
            after={"file": str(path.resolve()), "applied": str(result)},
        )
        self.stdout.write(f"{file}: {result}")
