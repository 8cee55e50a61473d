"""The bottom layer: what every app needs and no app owns (errors, db and redis helpers, env
parsing, request context, logging, metrics primitives). It imports no app of this project."""
